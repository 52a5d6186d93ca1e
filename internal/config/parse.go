package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"
)

// MaxFileSize bounds the document Parse accepts. A complete worker.toml is
// about 1.5 KB; the bound exists because go-toml's strict mode does work
// proportional to the document for every unknown key, so a large file of
// unknown keys would stall start-up (seconds at this size, minutes at a
// ConfigMap's 1 MiB) instead of failing at once.
const MaxFileSize = 64 << 10

// maxExplained bounds the unknown keys Parse explains one by one, which keeps
// both the message and the work linear in the size of the document.
const maxExplained = 20

// Parse decodes a worker.toml document on top of [Default] and validates the
// result. Keys the document leaves out keep their defaults. Parsing is
// strict, because a silently ignored key is a setting the operator believes
// is in force and is not: an unknown key names its full dotted path and the
// keys its table accepts; a value of the wrong type names the key, the value
// and the expected type; range problems come from [Config.Validate]. Every
// unknown key and range problem is reported at once. On error the returned
// Config is the zero value.
func Parse(data []byte) (Config, error) {
	if len(data) > MaxFileSize {
		return Config{}, fmt.Errorf("worker config is %d bytes, over the limit of %d (a complete worker.toml is about 1.5 KB)",
			len(data), MaxFileSize)
	}
	cfg := Default()
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(&cfg)

	var missing *toml.StrictMissingError
	switch {
	case err == nil:
		err = cfg.Validate()
	case errors.As(err, &missing):
		// Strict errors are collected after a complete decode, so every
		// known key has been assigned: the range checks are meaningful and
		// reported together with the unknown keys. Each explanation
		// re-reads the document, so only the first few are explained and
		// the rest are counted.
		errs := make([]error, 0, maxExplained+2)
		for i := range missing.Errors {
			if i == maxExplained {
				errs = append(errs, fmt.Errorf("and %d more unknown keys", len(missing.Errors)-i))
				break
			}
			errs = append(errs, unknownKeyError(data, &missing.Errors[i]))
		}
		err = errors.Join(append(errs, cfg.Validate())...)
	default:
		err = decodeError(data, err)
	}
	if err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Load reads and parses the file at path. It exists for tools and tests that
// have a path in hand; the worker itself starts through [FromEnv].
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// FromEnv is how the worker starts: it loads the file named by
// [EnvConfigPath] and fills worker_id (see [Config.FillWorkerID]). It returns
// the path it loaded so the caller can log it; when EnvConfigPath is unset or
// empty, path is "" and the configuration is [Default], so a worker runs
// outside Kubernetes without a file.
func FromEnv() (cfg Config, path string, err error) {
	path = os.Getenv(EnvConfigPath)
	if path == "" {
		cfg = Default()
	} else if cfg, err = Load(path); err != nil {
		return Config{}, path, err
	}
	if err = cfg.FillWorkerID(); err != nil {
		return Config{}, path, err
	}
	return cfg, path, nil
}

// FillWorkerID sets an empty worker_id to env [EnvPodName], or to the
// hostname when that is unset too (outside Kubernetes). One ConfigMap serves
// every pod of a pool, so the file normally leaves worker_id empty and each
// pod names itself. It is a separate step from Parse so that Parse stays a
// pure function of its input, and so that a worker started through the C ABI
// from a TOML string applies the same rule as [FromEnv].
func (c *Config) FillWorkerID() error {
	if c.Worker.WorkerID != "" {
		return nil
	}
	if pod := os.Getenv(EnvPodName); pod != "" {
		c.Worker.WorkerID = pod
		return nil
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("worker.worker_id is empty, %s is unset and the hostname is unavailable: %w", EnvPodName, err)
	}
	c.Worker.WorkerID = host
	return nil
}

// Render encodes c as worker.toml for the operator's ConfigMap: one table per
// section, in the order the types declare them. The output is deterministic (the
// same Config always gives the same bytes, so the ConfigMap, and any checksum
// of it on the pod template, only change when a setting does), and
// Parse(Render(c)) returns c for every valid c. An empty worker_id is left
// out, so each pod fills in its own. Render does not validate; call
// [Config.Validate] first.
func (c Config) Render() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, fmt.Errorf("render worker config: %w", err)
	}
	// go-toml writes a header for [worker.mpsc_channels], which holds only
	// sub-tables. Drop it to keep upstream's layout. Strings are encoded on
	// one line, so this can only match the header itself.
	return bytes.Replace(buf.Bytes(), []byte("\n[worker.mpsc_channels]\n"), []byte("\n"), 1), nil
}
