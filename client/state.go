package client

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The state directory (Config.StateDir) keeps what a client must remember
// across restarts: its guard sample and the build times its circuit build
// timeout learned from. It is created 0700; the file is written 0600,
// atomically (a temporary file in the same directory, synced, then renamed
// over the old one, then the directory synced), so a crash leaves either
// the old state or the new one.

// StateFileName is the state file inside the state directory;
// StatusFileName is the status snapshot that `veil client status` reads.
const (
	StateFileName  = "state.json"
	StatusFileName = "status.json"
	stateVersion   = 1
	// maxStateFile bounds what is read from disk.
	maxStateFile = 1 << 20
)

// ErrBadState is returned for a state file that cannot be used.
var ErrBadState = errors.New("client: unusable state file")

// State is the persistent client state.
type State struct {
	Version int `json:"version"`
	GuardSet
	// BuildTimesMS are recent completed circuit build times, milliseconds.
	BuildTimesMS []int64 `json:"build_times_ms,omitempty"`
}

// ParseState decodes a state file. It rejects an oversized file, an
// unknown version, more than MaxSampledGuards guards, duplicate guards,
// path-bias counts out of range and more than MaxBuildObservations build
// times.
func ParseState(b []byte) (*State, error) {
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadState, maxStateFile)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadState, st.Version)
	}
	if len(st.Entries) > MaxSampledGuards || len(st.BuildTimesMS) > MaxBuildObservations {
		return nil, fmt.Errorf("%w: too many entries", ErrBadState)
	}
	seen := map[[32]byte]bool{}
	for _, e := range st.Entries {
		if seen[e.ID] {
			return nil, fmt.Errorf("%w: duplicate guard", ErrBadState)
		}
		seen[e.ID] = true
		if e.PathAttempts < 0 || e.PathSuccesses < 0 || e.PathSuccesses > e.PathAttempts || e.PathAttempts > PathBiasScaleAt {
			return nil, fmt.Errorf("%w: path-bias counts out of range", ErrBadState)
		}
	}
	for _, ms := range st.BuildTimesMS {
		if ms < 0 || ms > int64(MaxBuildTimeout/time.Millisecond) {
			return nil, fmt.Errorf("%w: build time out of range", ErrBadState)
		}
	}
	return &st, nil
}

// Encode returns the state file's bytes.
func (st *State) Encode() []byte {
	st.Version = stateVersion
	b, _ := json.MarshalIndent(st, "", "  ") // cannot fail for these types
	return append(b, '\n')
}

// loadState reads dir's state file; a missing file is an empty state.
func loadState(dir string) (*State, error) {
	b, err := readBounded(filepath.Join(dir, StateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: reading state: %w", err)
	}
	return ParseState(b)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxStateFile+1))
}

// ensureStateDir creates dir with mode 0700 if needed and refuses a
// directory that others can read or write.
func ensureStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client: state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("client: state directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("client: state directory %s is accessible to other users (mode %v); chmod 700 it", dir, fi.Mode().Perm())
	}
	return nil
}

// writeFileAtomic writes b to dir/name with mode 0600 so that readers see
// either the old file or the new one.
func writeFileAtomic(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// guardEntryJSON is GuardEntry on disk, with the identity in hex.
type guardEntryJSON struct {
	ID string `json:"id"`
	guardEntryFields
}

type guardEntryFields GuardEntry

// MarshalJSON writes the identity as hex.
func (e GuardEntry) MarshalJSON() ([]byte, error) {
	f := guardEntryFields(e)
	return json.Marshal(struct {
		ID string `json:"id"`
		*guardEntryFields
	}{hex.EncodeToString(e.ID[:]), &f})
}

// UnmarshalJSON reads what MarshalJSON writes; the identity must be 64
// hex digits.
func (e *GuardEntry) UnmarshalJSON(b []byte) error {
	var v guardEntryJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	id, err := hex.DecodeString(v.ID)
	if err != nil || len(id) != len(e.ID) {
		return errors.New("guard id is not 64 hex digits")
	}
	*e = GuardEntry(v.guardEntryFields)
	copy(e.ID[:], id)
	return nil
}
