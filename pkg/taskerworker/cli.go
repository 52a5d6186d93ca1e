package taskerworker

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
)

// Version is stamped at link time (-X .../pkg/taskerworker.Version=v0.1.0).
var Version = "dev"

// Main runs the tasker-worker command line with the given handlers and exits.
// It handles SIGTERM and SIGINT itself, so it is safe as PID 1 in a container.
func Main(handlers *Registry) {
	os.Exit(Run(os.Args[1:], handlers, os.Stdout, os.Stderr))
}

// Run is Main without the exit, for tests: it returns the exit code.
func Run(args []string, handlers *Registry, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"run"}
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], handlers, stderr)
	case "migrate":
		err = cmdMigrate(args[1:], stdout)
	case "enqueue":
		err = cmdEnqueue(args[1:], stdout)
	case "stats":
		err = cmdStats(args[1:], stdout)
	case "config":
		err = cmdConfig(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, Version)
	case "help", "-h", "--help":
		usage(stdout)
	default:
		usage(stderr)
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tasker-worker: %v\n", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `tasker-worker: runs Tasker step handlers from a durable PostgreSQL queue.

Commands:
  run                   claim and run steps until SIGTERM, then drain (default)
  migrate               apply the queue schema (idempotent)
  enqueue               add steps to a queue
  stats                 show step counts per queue and state
  config validate FILE  check a worker.toml
  config default        print the default worker.toml
  version               print the version

Built-in FFI poller (run flags; for tests and demos without a Python/Ruby runtime):
  run --ffi-pollers N   N goroutines poll the FFI dispatch channel (Poll/Complete, as a
                        foreign handler does through the C ABI) and run this binary's
                        handlers; needs worker.mpsc_channels.ffi_dispatch.enabled = true
  run --ffi-poll-hold D complete each event no earlier than D after it was polled: a slow
                        poller, whose events starve once D > starvation_warning_threshold_ms

Environment:
  DATABASE_URL          PostgreSQL URL of the queue (or --database-url)
  TASKER_CONFIG_PATH    worker.toml to run with (or run --config)
  POD_NAME              worker id when worker_id is not set (else the hostname)
  TASKER_LOG_LEVEL      debug, info (default), warn or error

Run 'tasker-worker COMMAND -h' for a command's flags.
`)
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("tasker-worker "+name, flag.ContinueOnError)
	return fs
}

func databaseURL(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if v := os.Getenv(config.EnvDatabaseURL); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("no database: set %s or pass --database-url (e.g. postgres://tasker@127.0.0.1:5432/tasker)", config.EnvDatabaseURL)
}

func newLogger(level string, out io.Writer) (logr.Logger, error) {
	if level == "" {
		level = os.Getenv("TASKER_LOG_LEVEL")
	}
	lvl := zapcore.InfoLevel
	if level != "" {
		if err := lvl.Set(level); err != nil {
			return logr.Logger{}, fmt.Errorf("log level %q: want debug, info, warn or error", level)
		}
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(out), lvl)
	return zapr.NewLogger(zap.New(core)), nil
}

func cmdRun(args []string, handlers *Registry, stderr io.Writer) error {
	fs := newFlags("run")
	cfgPath := fs.String("config", "", "worker.toml path (default: $TASKER_CONFIG_PATH, else built-in defaults)")
	dbURL := fs.String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	migrate := fs.Bool("migrate", true, "apply the queue schema before starting")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default: $TASKER_LOG_LEVEL or info)")
	ffiPollers := fs.Int("ffi-pollers", 0, "run `N` built-in Go pollers of the FFI dispatch channel, with the handlers of this binary\n"+
		"(needs "+ffiEnabledKey+" = true; 0: none, foreign handlers poll through the C ABI)")
	ffiHold := fs.Duration("ffi-poll-hold", 0, "with --ffi-pollers: complete each event no earlier than this `DURATION` after it was polled\n"+
		"(a slow poller on purpose: above starvation_warning_threshold_ms its events starve)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected arguments %q", fs.Args())
	}
	log, err := newLogger(*logLevel, stderr)
	if err != nil {
		return err
	}
	var cfg config.Config
	var path string
	if *cfgPath != "" {
		path = *cfgPath
		if cfg, err = config.Load(path); err == nil {
			err = cfg.FillWorkerID()
		}
	} else {
		cfg, path, err = config.FromEnv()
	}
	if err != nil {
		return err
	}
	if err := checkFFIPollerFlags(*ffiPollers, *ffiHold, cfg, path); err != nil {
		return err
	}
	dsn, err := databaseURL(*dbURL)
	if err != nil {
		return err
	}
	if handlers == nil {
		handlers = NewRegistry()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting tasker-worker", "version", Version, "config", path, "handlers", handlers.Names())
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	w, err := worker.New(startCtx, worker.Options{Config: cfg, DatabaseURL: dsn, Handlers: handlers, Logger: log, Version: Version, Migrate: *migrate})
	if err != nil {
		return err
	}
	stopPollers := startFFIPollers(w, handlers, *ffiPollers, *ffiHold, log)
	runErr := w.Run(ctx)
	stopPollers()
	if runErr != nil {
		return fmt.Errorf("drain: %w", runErr)
	}
	log.Info("stopped cleanly")
	return nil
}

// ffiEnabledKey is the config key --ffi-pollers depends on.
const ffiEnabledKey = "worker.mpsc_channels.ffi_dispatch.enabled"

// checkFFIPollerFlags refuses --ffi-pollers / --ffi-poll-hold values that
// could not take effect, before anything connects.
func checkFFIPollerFlags(pollers int, hold time.Duration, cfg config.Config, path string) error {
	if path == "" {
		path = "the built-in defaults"
	}
	switch {
	case pollers < 0:
		return fmt.Errorf("run: --ffi-pollers %d: want 0 (none) or more", pollers)
	case hold < 0:
		return fmt.Errorf("run: --ffi-poll-hold %v: want 0 or more", hold)
	case pollers == 0 && hold > 0:
		return fmt.Errorf("run: --ffi-poll-hold %v has no effect without --ffi-pollers N", hold)
	case pollers > 0 && !cfg.Worker.MPSCChannels.FFIDispatch.Enabled:
		return fmt.Errorf("run: --ffi-pollers %d needs the FFI dispatch channel, which is not enabled in %s: set %s = true "+
			"([worker.mpsc_channels.ffi_dispatch] enabled = true), or drop --ffi-pollers", pollers, path, ffiEnabledKey)
	}
	return nil
}

// startFFIPollers starts the built-in FFI poller on the worker's FFI channel
// with the registry native dispatch would use, and returns what stops it.
// Its context is not the signal context: the worker's drain waits for
// pending FFI events, so the poller must keep completing them until Run
// returns.
func startFFIPollers(w *worker.Worker, handlers *Registry, n int, hold time.Duration, log logr.Logger) (stop func()) {
	if n == 0 {
		return func() {}
	}
	log = log.WithName("ffi-poller")
	ch := w.FFI()
	if cc := ch.Config(); hold > cc.CompletionTimeout {
		log.Info("--ffi-poll-hold exceeds completion_timeout_ms: every event will time out (ffi_timeout) before it is completed",
			"hold", hold, "completionTimeout", cc.CompletionTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p := ffi.NewPoller(ch, handlers, ffi.PollerConfig{Pollers: n, Hold: hold}, log)
	go func() { defer close(done); p.Run(ctx) }()
	return func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			log.Info("FFI pollers still running 10s after stop (a handler ignores its context); exiting anyway")
		}
	}
}

func connect(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	dsn, err := databaseURL(dbURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return pool, nil
}

// openQueue connects to the queue database for the CLI's one-shot commands.
func openQueue(ctx context.Context, dbURL string) (*queue.Queue, func(), error) {
	pool, err := connect(ctx, dbURL)
	if err != nil {
		return nil, nil, err
	}
	version, err := queue.SchemaVersion(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	if version < queue.LatestSchemaVersion {
		pool.Close()
		return nil, nil, fmt.Errorf("database: queue schema at version %d, this tasker-worker needs %d: "+
			"run `tasker-worker migrate` (a worker also migrates at start-up unless started with --migrate=false)",
			version, queue.LatestSchemaVersion)
	}
	qu, err := queue.New(pool, queue.Options{}, nil)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return qu, pool.Close, nil
}

func cmdMigrate(args []string, stdout io.Writer) error {
	fs := newFlags("migrate")
	dbURL := fs.String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := connect(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := queue.Migrate(ctx, pool); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "queue schema at version %d\n", queue.LatestSchemaVersion)
	return nil
}

// stepLine is one JSON line of `enqueue --file`.
type stepLine struct {
	Queue         string          `json:"queue"`
	Handler       string          `json:"handler"`
	Payload       json.RawMessage `json:"payload"`
	StepUUID      string          `json:"step_uuid"`
	TaskUUID      string          `json:"task_uuid"`
	CorrelationID string          `json:"correlation_id"`
	TimeoutMs     int64           `json:"timeout_ms"`
	MaxAttempts   int             `json:"max_attempts"`
	DelayMs       int64           `json:"delay_ms"`
}

func cmdEnqueue(args []string, stdout io.Writer) error {
	fs := newFlags("enqueue")
	dbURL := fs.String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	q := fs.String("queue", "default", "queue (namespace) to add to")
	handler := fs.String("handler", "", "handler name (required unless --file)")
	payload := fs.String("payload", "{}", "JSON payload")
	count := fs.Int("count", 1, "how many identical steps to add")
	timeout := fs.Duration("timeout", 0, "the steps' own handler timeout (0: the worker's)")
	maxAttempts := fs.Int("max-attempts", 0, "attempts before a retryable failure is dead (0: queue default)")
	delay := fs.Duration("delay", 0, "make the steps visible only after this delay")
	file := fs.String("file", "", `JSON lines of steps ({"queue","handler","payload","timeout_ms","max_attempts",...}); "-" reads stdin`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var steps []queue.NewStep
	if *file != "" {
		var err error
		if steps, err = readSteps(*file); err != nil {
			return err
		}
	} else {
		if *handler == "" {
			return errors.New("enqueue: --handler is required (e.g. --handler noop), or pass --file")
		}
		if !json.Valid([]byte(*payload)) {
			return fmt.Errorf("enqueue: --payload %q is not valid JSON", *payload)
		}
		if *count < 1 {
			return fmt.Errorf("enqueue: --count %d: want >= 1", *count)
		}
		for range *count {
			steps = append(steps, queue.NewStep{Queue: *q, Handler: *handler, Payload: json.RawMessage(*payload),
				Timeout: *timeout, MaxAttempts: *maxAttempts, Delay: *delay})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	qu, closeQueue, err := openQueue(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer closeQueue()
	const chunk = 5000
	added := 0
	for i := 0; i < len(steps); i += chunk {
		out, err := qu.Enqueue(ctx, steps[i:min(i+chunk, len(steps))])
		if err != nil {
			return fmt.Errorf("enqueue (after %d added): %w", added, err)
		}
		for _, o := range out {
			if !o.Duplicate {
				added++
			}
		}
	}
	fmt.Fprintf(stdout, "enqueued %d steps (%d duplicates skipped)\n", added, len(steps)-added)
	return nil
}

func readSteps(path string) ([]queue.NewStep, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("enqueue --file: %w", err)
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var steps []queue.NewStep
	for line := 1; ; line++ {
		var l stepLine
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("enqueue --file %s: step %d: %w", path, line, err)
		}
		s := queue.NewStep{Queue: l.Queue, Handler: l.Handler, Payload: l.Payload, MaxAttempts: l.MaxAttempts,
			Timeout: time.Duration(l.TimeoutMs) * time.Millisecond, Delay: time.Duration(l.DelayMs) * time.Millisecond}
		for _, u := range []struct {
			name string
			in   string
			out  *queue.UUID
		}{{"step_uuid", l.StepUUID, &s.StepUUID}, {"task_uuid", l.TaskUUID, &s.TaskUUID}, {"correlation_id", l.CorrelationID, &s.CorrelationID}} {
			if u.in == "" {
				continue
			}
			id, err := queue.ParseUUID(u.in)
			if err != nil {
				return nil, fmt.Errorf("enqueue --file %s: step %d: %s: %w", path, line, u.name, err)
			}
			*u.out = id
		}
		if s.Queue == "" {
			s.Queue = "default"
		}
		steps = append(steps, s)
	}
	return steps, nil
}

func cmdStats(args []string, stdout io.Writer) error {
	fs := newFlags("stats")
	dbURL := fs.String("database-url", "", "PostgreSQL URL (default: $DATABASE_URL)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	qu, closeQueue, err := openQueue(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer closeQueue()
	stats, err := qu.Stats(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(stats))
	for n := range stats {
		names = append(names, n)
	}
	sort.Strings(names)
	if *asJSON {
		out := make([]queue.QueueStats, 0, len(names))
		for _, n := range names {
			out = append(out, stats[n])
		}
		return json.NewEncoder(stdout).Encode(out)
	}
	fmt.Fprintf(stdout, "%-20s %8s %9s %8s %8s %10s %6s %12s\n", "QUEUE", "READY", "SCHEDULED", "CLAIMED", "EXPIRED", "COMPLETED", "DEAD", "OLDEST-READY")
	for _, n := range names {
		s := stats[n]
		fmt.Fprintf(stdout, "%-20s %8d %9d %8d %8d %10d %6d %12s\n", n, s.Ready, s.Scheduled, s.Claimed, s.Expired, s.Completed, s.Dead, s.OldestReadyAge.Round(time.Millisecond))
	}
	return nil
}

func cmdConfig(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("config: want 'validate FILE' or 'default'")
	}
	switch args[0] {
	case "validate":
		if len(args) != 2 {
			return errors.New("config validate: want exactly one FILE")
		}
		if _, err := config.Load(args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: valid\n", args[1])
		return nil
	case "default":
		out, err := config.Default().Render()
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	default:
		return fmt.Errorf("config %s: unknown; want 'validate FILE' or 'default'", strings.Join(args, " "))
	}
}
