// Command ferretdb is a tiny wrapper around the embeddable FerretDB v1
// package (github.com/FerretDB/FerretDB/ferretdb) with the SQLite backend.
//
// It exists because `go install .../cmd/ferretdb@v1.24.2` panics at start:
// build/version/version.txt is not part of the module zip. The embeddable
// package skips that check when the main module is not FerretDB itself, so
// wrapping it in our own main module needs no patching.
//
// It serves the MongoDB wire protocol for tests and local development only:
// no authentication, no TLS.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP `host:port` to listen on")
	dir := flag.String("dir", "./.run/ferretdb-data", "SQLite data `directory` (created if missing)")
	logLevel := flag.String("log-level", "warn", "log `level`: debug, info, warn or error")
	flag.Parse()

	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "ferretdb: unexpected arguments: %s\n", strings.Join(flag.Args(), " "))
		flag.Usage()
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -log-level %q: %s\n", *logLevel, err)
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := run(*listen, *dir, logger); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: %s\n", err)
		os.Exit(1)
	}
}

func run(listen, dir string, logger *slog.Logger) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}

	if err = os.MkdirAll(abs, 0o755); err != nil {
		return err
	}

	// FerretDB wants a "file:" URI whose path is an existing directory ending with "/".
	sqliteURL := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/"}).String()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	logger.Info("ferretdb starting", "listen", listen, "dir", abs)

	// Run returns after ctx is canceled and all connections and the backend are closed.
	return f.Run(ctx)
}
