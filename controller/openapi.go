package controller

import _ "embed"

// openAPIDoc describes the API; a test checks it against the routes.
//
//go:embed openapi.json
var openAPIDoc []byte
