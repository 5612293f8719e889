package pvesim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

const contentType = "application/json;charset=UTF-8"

func writeData(w http.ResponseWriter, data any) {
	body, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		writeError(w, fail(http.StatusInternalServerError, "pvesim: encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "max-age=0")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeError answers with Proxmox's shape: the message as the HTTP reason
// phrase (clients read it from resp.Status) and, as newer servers do, in the
// body's "message". net/http always writes the standard reason phrase, so the
// status line is written by hand on the hijacked connection, which is then
// closed. Where hijacking is impossible (HTTP/2, recorders) the standard
// phrase is sent and the message stays in the body.
func writeError(w http.ResponseWriter, e *apiError) {
	reason := sanitizeReason(e.Message)
	payload := map[string]any{"data": nil}
	if e.Status != http.StatusUnauthorized {
		payload["message"] = e.Message + "\n"
	}
	if len(e.Errors) > 0 {
		payload["errors"] = e.Errors
	}
	body, _ := json.Marshal(payload)

	hj, ok := w.(http.Hijacker)
	if ok && reason != http.StatusText(e.Status) {
		conn, buf, err := hj.Hijack()
		if err == nil {
			defer conn.Close()
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			writeRaw(buf.Writer, e.Status, reason, body)
			return
		}
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Pvesim-Reason", reason)
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func writeRaw(bw *bufio.Writer, status int, reason string, body []byte) {
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", status, reason)
	fmt.Fprintf(bw, "Date: %s\r\n", time.Now().UTC().Format(http.TimeFormat))
	fmt.Fprintf(bw, "Content-Type: %s\r\n", contentType)
	fmt.Fprintf(bw, "Content-Length: %d\r\n", len(body))
	bw.WriteString("Cache-Control: max-age=0\r\nConnection: close\r\nServer: pve-api-daemon/3.0\r\n\r\n")
	_, _ = bw.Write(body)
	_ = bw.Flush()
}

// sanitizeReason makes a message fit a status line: one line, no trailing
// newline (Proxmox messages usually end in "\n").
func sanitizeReason(msg string) string {
	msg = strings.TrimSpace(msg)
	msg = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r < 0x20 {
			return ' '
		}
		return r
	}, msg)
	if msg == "" {
		return "Internal Server Error"
	}
	return msg
}
