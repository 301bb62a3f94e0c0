// Package wire is the router's HTTP/1.1 on the wire: its own connection
// loop for the requests that make up nearly all traffic (Server, Conn),
// their strict head parsers (head.go), the relay of a backend's answer
// (exchange.go, chunked.go), the client to the backends (Transport) and
// the raw system-call I/O under both (sysconn_*.go). It decides nothing
// about tenants: the router decides what to do with a request (Handler,
// and the head it builds to forward) and this package moves the bytes, or
// hands the connection to net/http when the request is not one it fully
// understands.
//
// A request's way through it: Server accepts a connection and its Conn
// reads a head (nextHead); a head the strict parser fully understands
// goes to the Handler's RequestServer, which decides where it goes, builds
// the head to send (AppendForwardHead plus its own fields) and calls
// Conn.Forward with an address; Forward takes a pooled backend connection
// from the Transport, sends the request and the client's body, relays the
// response as it arrives and reports the status the client got, or the
// failure (errors.go) for the caller to classify and answer (WriteJSON).
// Any other request hands the connection to a net/http server running
// ServerConfig.Fallback.
//
// On a TLS listener (ServerConfig.TLS) the connection's goroutine first
// does the handshake; h2 goes to net/http on the *tls.Conn, anything else
// takes the same way over the TLS connection (Conn.TLS tells the handler
// its state, and net/http is told it for a connection handed off).
package wire
