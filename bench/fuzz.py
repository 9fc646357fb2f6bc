"""Coverage-guided fuzzing of the collector's decoder and reassembler (atheris).

    python -m bench.fuzz --seconds 60          # what ``make fuzz`` runs

Each input is split in two: a byte that picks where the stream is cut, then
the stream, which follows a hello (so the reassembler is reached). The
input goes through ``ServerConnection`` both ways (``next_event`` and the
bulk ``next_events``); anything but a ``ProtocolError``, a disagreement
between the two ways, or a document that breaks a limit (seq order, depth,
int64, not serialisable) is a crash, and atheris saves the input under
``--artifacts``. The hypothesis properties in tests/protocol/test_fuzz.py
check the same rules; this adds coverage guidance over long runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deltawire.protocol import ProtocolError
from deltawire.testing.fuzzing import check_documents, outcomes

HELLO = b'{"t":"hello","v":1,"session":"fz"}\n'

#: Seeds: one of each frame kind, so the fuzzer starts past the JSON layer.
SEEDS = (
    b'\x07{"t":"snap","seq":1,"ts":1.5,"name":"p","data":{"a":{"b":[1,2]}}}\n'
    b'{"t":"delta","seq":2,"ts":2.5,"name":"p","data":{"a":{"b":null,"c":1}}}\n'
    b'{"t":"event","seq":3,"ts":3,"name":"e","data":{"x":9223372036854775807}}\n'
    b'{"t":"bye","seq":4,"ts":4,"data":{"exit_code":0}}\n',
)


def _comparable(out: list[Any]) -> list[Any]:
    return [(e.code, e.fatal, e.seq) if isinstance(e, ProtocolError) else e for e in out]


def one_input(data: bytes) -> None:
    if not data:
        return
    wire = HELLO + data[1:]
    cut = data[0] * len(wire) // 255
    pieces = (wire[:cut], wire[cut:])
    one = outcomes(pieces, bulk=False)
    check_documents(one)
    assert _comparable(outcomes(pieces, bulk=True)) == _comparable(one), "the two ways disagree"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default: 60)")
    ap.add_argument("--artifacts", type=Path, default=Path("bench/results/fuzz"),
                    help="where crashing inputs and the corpus go (default: bench/results/fuzz)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed: pip install atheris (make fuzz does)", file=sys.stderr)
        return 2
    corpus = args.artifacts / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed-{i}").write_bytes(seed)
    libfuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", "-max_len=4096",
                      f"-artifact_prefix={args.artifacts}/", "-print_final_stats=1", str(corpus)]  # fmt: skip
    atheris.instrument_all()  # coverage of everything loaded: the protocol package
    atheris.Setup(libfuzzer_args, one_input)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


if __name__ == "__main__":
    raise SystemExit(main())
