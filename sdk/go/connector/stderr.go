package connector

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// maxLogLine is the longest stderr line parsed as a log entry (go-plugin's default buffer);
// longer lines are passed through raw and logged in fragments.
const maxLogLine = 64 << 10

// hclogTimeLayout is the @timestamp layout of hclog's JSON format.
const hclogTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// stderrPump drains a connector's stderr: every byte is copied to raw, and when logger is set,
// each line is parsed defensively as an hclog JSON entry (or a "[LEVEL] text" line) and re-logged.
// Unlike go-plugin's own parser it never panics on entries with non-string fields.
type stderrPump struct {
	done chan struct{}
}

func startStderrPump(r io.ReadCloser, raw io.Writer, logger hclog.Logger) *stderrPump {
	p := &stderrPump{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer r.Close()
		pumpStderr(r, raw, logger)
	}()
	return p
}

// wait waits until the pipe reached EOF (every copy of its write end is closed), at most d.
func (p *stderrPump) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

func pumpStderr(r io.Reader, raw io.Writer, logger hclog.Logger) {
	br := bufio.NewReaderSize(r, maxLogLine)
	continuation := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if _, werr := raw.Write(chunk); werr != nil {
				raw = io.Discard // keep draining the pipe even if the copy target broke
			}
			if logger != nil {
				if continuation || err == bufio.ErrBufferFull {
					logger.Debug(string(bytes.TrimRight(chunk, "\r\n")))
				} else {
					logLine(logger, chunk)
				}
			}
			continuation = err == bufio.ErrBufferFull
		}
		if err != nil && err != bufio.ErrBufferFull {
			return // io.EOF, or the pipe failed
		}
	}
}

// logLine re-logs one complete stderr line.
func logLine(logger hclog.Logger, line []byte) {
	line = bytes.TrimRight(line, " \t\r\n")
	if len(line) == 0 {
		return
	}
	if line[0] == '{' {
		var entry map[string]interface{}
		if json.Unmarshal(line, &entry) == nil {
			if level, msg, args, ok := parseHclogEntry(entry); ok {
				logger.Log(level, msg, args...)
				return
			}
			logger.Debug(string(line))
			return
		}
	}
	logger.Log(prefixLevel(line), string(line))
}

// parseHclogEntry extracts an hclog JSON entry. ok is false when the entry is not a usable
// hclog entry (missing or unknown level, or a non-string @level/@message/@timestamp).
func parseHclogEntry(entry map[string]interface{}) (level hclog.Level, msg string, args []interface{}, ok bool) {
	levelStr, isString := entry["@level"].(string)
	if !isString {
		return 0, "", nil, false
	}
	level = hclog.LevelFromString(levelStr)
	if level == hclog.NoLevel {
		return 0, "", nil, false
	}
	if v, present := entry["@message"]; present {
		if msg, isString = v.(string); !isString {
			return 0, "", nil, false
		}
	}
	var timestamp string
	if v, present := entry["@timestamp"]; present {
		s, isString := v.(string)
		if !isString {
			return 0, "", nil, false
		}
		if _, err := time.Parse(hclogTimeLayout, s); err != nil {
			return 0, "", nil, false
		}
		timestamp = s
	}
	keys := make([]string, 0, len(entry))
	for k := range entry {
		switch k {
		case "@level", "@message", "@timestamp":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k, entry[k])
	}
	if timestamp != "" {
		args = append(args, "timestamp", timestamp)
	}
	return level, msg, args, true
}

// prefixLevel maps go-plugin's "[LEVEL]" line prefixes; anything else is debug output.
func prefixLevel(line []byte) hclog.Level {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[TRACE]", hclog.Trace},
		{"[DEBUG]", hclog.Debug},
		{"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn},
		{"[ERROR]", hclog.Error},
	} {
		if bytes.HasPrefix(line, []byte(p.prefix)) {
			return p.level
		}
	}
	return hclog.Debug
}

// tailBuffer keeps the last bytes written to it (the end of a connector's stderr, for errors).
type tailBuffer struct {
	mu   sync.Mutex
	max  int
	data []byte
}

func newTailBuffer(max int) *tailBuffer {
	return &tailBuffer{max: max}
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.data = append(t.data[:0], p...)
		return n, nil
	}
	if over := len(t.data) + len(p) - t.max; over > 0 {
		t.data = append(t.data[:0], t.data[over:]...)
	}
	t.data = append(t.data, p...)
	return n, nil
}

// String returns the buffered text without a leading partial line, trimmed.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.data)
	if len(t.data) == t.max {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i+1 < len(s) {
			s = s[i+1:]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
}

// closeQuietly closes f (a pipe end), ignoring errors.
func closeQuietly(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}
