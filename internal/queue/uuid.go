package queue

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// UUID is a step, task or correlation identifier. It is a plain 16-byte
// value so the queue needs no third-party UUID module; it reads and writes
// PostgreSQL's uuid type and JSON's canonical string form. The zero value
// means "absent" (SQL NULL for correlation_id, "generate one" on enqueue).
type UUID [16]byte

// NewUUID returns a random (version 4) UUID from crypto/rand, so producers
// can name a step before enqueueing it and retry the enqueue safely.
func NewUUID() UUID {
	var u UUID
	if _, err := rand.Read(u[:]); err != nil {
		panic(fmt.Sprintf("queue: crypto/rand failed: %v", err)) // never happens on Linux
	}
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	return u
}

// ParseUUID reads the canonical 8-4-4-4-12 hex form (braces and dashes
// optional), as found in step results and CLI arguments.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	var clean []byte
	switch len(s) {
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return u, fmt.Errorf("invalid UUID %q", s)
		}
		clean = []byte(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	case 32:
		clean = []byte(s)
	default:
		return u, fmt.Errorf("invalid UUID %q: wrong length", s)
	}
	if _, err := hex.Decode(u[:], clean); err != nil {
		return UUID{}, fmt.Errorf("invalid UUID %q: %w", s, err)
	}
	return u, nil
}

// IsZero reports whether u is the absent value.
func (u UUID) IsZero() bool { return u == UUID{} }

// String formats u canonically (lower-case 8-4-4-4-12).
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// MarshalText makes UUIDs appear as strings in JSON (the result wire
// format's step_uuid).
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText accepts what MarshalText produces.
func (u *UUID) UnmarshalText(b []byte) error {
	v, err := ParseUUID(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// UUIDValue lets pgx encode a UUID; the zero value is sent as NULL.
func (u UUID) UUIDValue() (pgtype.UUID, error) {
	return pgtype.UUID{Bytes: u, Valid: !u.IsZero()}, nil
}

// ScanUUID lets pgx decode a uuid column; NULL becomes the zero value.
func (u *UUID) ScanUUID(v pgtype.UUID) error {
	if !v.Valid {
		*u = UUID{}
		return nil
	}
	*u = v.Bytes
	return nil
}
