package authority

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/veilnet/veil/directory"
	"github.com/veilnet/veil/internal/dirclient"
)

// Handler returns the HTTP handler of the directory protocol
// (docs/spec/directory.md, "HTTP interface"):
//
//	POST dirclient.PathDescriptor                  a signed descriptor
//	GET  dirclient.PathConsensus                   the consensus served
//	POST dirclient.PathVote                        a peer's vote
//	GET  dirclient.PathVote/{va}/{authority}       a vote held
//	POST dirclient.PathSignature                   a peer's detached signature
//	GET  dirclient.PathSignature/{va}/{authority}  a detached signature held
//
// Request bodies are bounded by the document's size limit (413 beyond),
// malformed or refused documents get 400 with a one-line reason, missing
// documents 404, and more than MaxConcurrentRequests requests at once 503.
func (a *Authority) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+dirclient.PathDescriptor, a.postDescriptor)
	mux.HandleFunc("GET "+dirclient.PathConsensus, a.getConsensus)
	mux.HandleFunc("POST "+dirclient.PathVote, a.postVote)
	mux.HandleFunc("GET "+dirclient.PathVote+"/{va}/{id}", a.getVote)
	mux.HandleFunc("POST "+dirclient.PathSignature, a.postSignature)
	mux.HandleFunc("GET "+dirclient.PathSignature+"/{va}/{id}", a.getSignature)
	return a.guard(mux)
}

// guard bounds concurrency and turns a handler panic into a 500 and a
// log line instead of a crashed connection.
func (a *Authority) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case a.sem <- struct{}{}:
			defer func() { <-a.sem }()
		default:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("panic in directory handler", "path", r.URL.Path, "panic", p)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// readBody reads at most limit bytes of the request body; it writes the
// error response itself and returns nil on failure.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) []byte {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "document too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "cannot read body", http.StatusBadRequest)
		}
		return nil
	}
	return b
}

// refuse answers 400 with the error's text; directory errors name the
// problem but carry no key material.
func refuse(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func writeDoc(w http.ResponseWriter, doc []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=us-ascii")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	_, _ = w.Write(doc)
}

func (a *Authority) postDescriptor(w http.ResponseWriter, r *http.Request) {
	b := readBody(w, r, directory.MaxDescriptorSize)
	if b == nil {
		return
	}
	a.mu.Lock()
	d, err := a.core.AddDescriptor(b, a.now())
	a.mu.Unlock()
	if err != nil {
		a.log.Debug("descriptor refused", "err", err)
		refuse(w, err)
		return
	}
	a.log.Debug("descriptor accepted", "nickname", d.Nickname, "relay", d.ID().String())
	select {
	case a.reachKick <- struct{}{}:
	default:
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (a *Authority) getConsensus(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	doc := a.publishedDoc
	a.mu.Unlock()
	if doc == nil || a.now().After(doc.ValidUntil) {
		http.Error(w, "no valid consensus", http.StatusNotFound)
		return
	}
	doc.ServeHTTP(w, r)
}

func (a *Authority) postVote(w http.ResponseWriter, r *http.Request) {
	b := readBody(w, r, directory.MaxVoteSize)
	if b == nil {
		return
	}
	a.mu.Lock()
	i, err := a.core.AddVote(b, a.now())
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("vote refused", "err", err)
		refuse(w, err)
		return
	}
	a.log.Debug("vote accepted", "from", a.cfg.Network.Authorities[i].Name)
	_, _ = io.WriteString(w, "ok\n")
}

func (a *Authority) postSignature(w http.ResponseWriter, r *http.Request) {
	b := readBody(w, r, directory.MaxSignatureSize)
	if b == nil {
		return
	}
	a.mu.Lock()
	i, err := a.core.AddSignature(b, a.now())
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("signature refused", "err", err)
		refuse(w, err)
		return
	}
	a.log.Debug("signature accepted", "from", a.cfg.Network.Authorities[i].Name)
	// A signature arriving after valid-after may complete, or add to, the
	// round's consensus.
	if s, err := directory.ParseSignature(b); err == nil {
		_ = a.tryPublish(s.ValidAfter)
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (a *Authority) getVote(w http.ResponseWriter, r *http.Request) {
	va, i, ok := a.roundParams(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	doc := a.core.Vote(va, i)
	a.mu.Unlock()
	if doc == nil {
		http.Error(w, "no such vote", http.StatusNotFound)
		return
	}
	writeDoc(w, doc)
}

func (a *Authority) getSignature(w http.ResponseWriter, r *http.Request) {
	va, i, ok := a.roundParams(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	doc := a.core.Signature(va, i)
	a.mu.Unlock()
	if doc == nil {
		http.Error(w, "no such signature", http.StatusNotFound)
		return
	}
	writeDoc(w, doc)
}

// roundParams parses {va} (Unix seconds) and {id} (hex identity of an
// authority in the network file).
func (a *Authority) roundParams(w http.ResponseWriter, r *http.Request) (time.Time, int, bool) {
	secs, err := strconv.ParseInt(r.PathValue("va"), 10, 64)
	id, idErr := directory.ParseRelayID(r.PathValue("id"))
	if err != nil || idErr != nil || secs < 0 || secs > 1<<40 {
		http.Error(w, "bad round or authority", http.StatusBadRequest)
		return time.Time{}, 0, false
	}
	i := a.cfg.Network.Index(id[:])
	if i < 0 {
		http.Error(w, "unknown authority", http.StatusNotFound)
		return time.Time{}, 0, false
	}
	return time.Unix(secs, 0).UTC(), i, true
}
