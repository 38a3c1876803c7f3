package testconnector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "tributary.dev/sdk/go/proto"
)

// Options are the Sync options of the test connector (JSON; every key optional).
type Options struct {
	Pages         int // number of Upsert calls
	PageSize      int // objects per page
	ObjectBytes   int // pad each object's metadata so the encoded object is about this size
	OversizeBytes int // encoded size of the single page sent in mode oversized_page
	PageDelayMs   int // pause after each acknowledged page (a slow source); Go connector only
	Revision      int // when > 0, one object in a hundred (index % 100 == 0) carries "rev":R
}

// DefaultOptions are the contract's defaults.
var DefaultOptions = Options{Pages: 3, PageSize: 10, ObjectBytes: 0, OversizeBytes: 8 << 20}

// maxBytes bounds object_bytes and oversize_bytes so a typo cannot exhaust memory.
const maxBytes = 1 << 30

// ParseOptions parses the options string; an empty string means all defaults.
func ParseOptions(s string) (Options, error) {
	o := DefaultOptions
	if strings.TrimSpace(s) == "" {
		return o, nil
	}
	var raw struct {
		Pages         *int `json:"pages"`
		PageSize      *int `json:"page_size"`
		ObjectBytes   *int `json:"object_bytes"`
		OversizeBytes *int `json:"oversize_bytes"`
		PageDelayMs   *int `json:"page_delay_ms"`
		Revision      *int `json:"revision"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if err := dec.Decode(&raw); err != nil {
		return o, fmt.Errorf("invalid options: %w", err)
	}
	if dec.More() {
		return o, errors.New("invalid options: trailing data after the JSON object")
	}
	for _, f := range []struct {
		name string
		src  *int
		dst  *int
		max  int
	}{
		{"pages", raw.Pages, &o.Pages, int(^uint32(0) >> 1)},
		{"page_size", raw.PageSize, &o.PageSize, 10_000_000},
		{"object_bytes", raw.ObjectBytes, &o.ObjectBytes, maxBytes},
		{"oversize_bytes", raw.OversizeBytes, &o.OversizeBytes, maxBytes},
		{"page_delay_ms", raw.PageDelayMs, &o.PageDelayMs, 3_600_000},
		{"revision", raw.Revision, &o.Revision, int(^uint32(0) >> 1)},
	} {
		if f.src == nil {
			continue
		}
		if *f.src < 0 || *f.src > f.max {
			return o, fmt.Errorf("invalid options: %s must be between 0 and %d, got %d", f.name, f.max, *f.src)
		}
		*f.dst = *f.src
	}
	return o, nil
}

// Object builds object index of page as the contract describes: remote_id obj-<page>-<index>,
// resource_name "resource <index>", uri test://<page>/<index>, metadata
// {"page":P,"index":I} or, when objectBytes > 0, {"page":P,"index":I,"pad":"xxx…"} with the pad
// sized so that the encoded DataObject is about objectBytes.
func Object(page, index, objectBytes int) *pb.DataObject {
	return revisedObject(page, index, objectBytes, 0)
}

// revisedObject is Object with "rev":revision after the index when revision > 0 and index is a
// multiple of 100: a re-sync at a new revision changes one object in a hundred.
func revisedObject(page, index, objectBytes, revision int) *pb.DataObject {
	head := fmt.Sprintf(`{"page":%d,"index":%d`, page, index)
	if revision > 0 && index%100 == 0 {
		head += fmt.Sprintf(`,"rev":%d`, revision)
	}
	o := &pb.DataObject{
		RemoteId:     fmt.Sprintf("obj-%d-%d", page, index),
		ResourceName: "resource " + strconv.Itoa(index),
		Uri:          fmt.Sprintf("test://%d/%d", page, index),
		Metadata:     head + "}",
	}
	if objectBytes > 0 {
		pad(o, head, func() int { return proto.Size(o) }, objectBytes)
	}
	return o
}

// Page builds page number page with size objects at the given revision (0: the original).
func Page(page, size, objectBytes, revision int) *pb.SyncResponse {
	r := &pb.SyncResponse{Response: make([]*pb.DataObject, 0, size)}
	for i := 0; i < size; i++ {
		r.Response = append(r.Response, revisedObject(page, i, objectBytes, revision))
	}
	return r
}

// OversizedPage builds page number page: one object obj-<page>-0 padded so that the encoded
// page (SyncResponse) is about totalBytes.
func OversizedPage(page, totalBytes int) *pb.SyncResponse {
	o := Object(page, 0, 0)
	r := &pb.SyncResponse{Response: []*pb.DataObject{o}}
	pad(o, fmt.Sprintf(`{"page":%d,"index":0`, page), func() int { return proto.Size(r) }, totalBytes)
	return r
}

// pad sets o.Metadata to head + `,"pad":"x…"}` so that size() is as close to target
// as the varint length prefixes allow (within a byte or two). When even an empty pad would
// exceed target, the metadata stays unpadded.
func pad(o *pb.DataObject, head string, size func() int, target int) {
	unpadded := o.Metadata
	prefix := head + `,"pad":"`
	const suffix = `"}`
	set := func(n int) { o.Metadata = prefix + strings.Repeat("x", n) + suffix }

	n := 0
	set(n)
	// Each step corrects by the remaining difference; only a change in the length of a varint
	// prefix can make it overshoot, so a few steps converge.
	for i := 0; i < 4; i++ {
		next := n + target - size()
		if next < 0 {
			next = 0
		}
		if next == n {
			break
		}
		n = next
		set(n)
	}
	if n == 0 && size() > target {
		o.Metadata = unpadded
	}
}
