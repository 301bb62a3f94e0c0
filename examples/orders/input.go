package orders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on request input.
const (
	maxBodyBytes   = 1 << 20
	maxItemChars   = 200
	maxQuantity    = 1_000_000
	defaultLimit   = 100
	maxLimit       = 1000
	maxAttrsNested = 32
)

// orderRequest is how a body is decoded: pointers tell a missing field from
// a zero one.
type orderRequest struct {
	Item       *string         `json:"item"`
	Quantity   *int            `json:"quantity"`
	PriceCents *int64          `json:"price_cents"`
	Attrs      json.RawMessage `json:"attrs"`
}

// decodeOrder reads and validates a POST or PUT body. Every failure is a
// 400 (413 for an oversized body) that names the field at fault.
func decodeOrder(w http.ResponseWriter, r *http.Request) (OrderInput, error) {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req orderRequest
	if err := dec.Decode(&req); err != nil {
		return OrderInput{}, decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return OrderInput{}, decodeError(err)
		}
		return OrderInput{}, newAPIError(http.StatusBadRequest, CodeBadJSON, "request body must hold exactly one JSON object")
	}
	return req.validate()
}

// decodeError turns a json decoding error into an answer naming the field.
func decodeError(err error) *apiError {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return newAPIError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, fmt.Sprintf("request body must be at most %d bytes", maxBodyBytes))
	}
	if errors.Is(err, io.EOF) {
		return newAPIError(http.StatusBadRequest, CodeBadJSON, "request body is empty; expected a JSON object")
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return newAPIError(http.StatusBadRequest, CodeBadJSON, fmt.Sprintf("request body is not valid JSON (at byte %d): %s", se.Offset, se.Error()))
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return newAPIError(http.StatusBadRequest, CodeBadJSON, "request body is truncated JSON")
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return newAPIError(http.StatusBadRequest, CodeBadJSON, "request body must be a JSON object")
		}
		return fieldError(te.Field, fmt.Sprintf("%s must be %s, not a JSON %s", te.Field, typeName(te.Field), te.Value))
	}
	// encoding/json reports unknown fields only as text: json: unknown field "x".
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		name, uerr := strconv.Unquote(strings.TrimPrefix(msg, "json: unknown field "))
		if uerr != nil {
			name = strings.TrimPrefix(msg, "json: unknown field ")
		}
		return fieldError(name, fmt.Sprintf("unknown field %q; allowed: item, quantity, price_cents, attrs", name))
	}
	return newAPIError(http.StatusBadRequest, CodeBadJSON, "request body is not a valid order JSON object")
}

func typeName(field string) string {
	switch field {
	case "item":
		return "a string"
	case "quantity", "price_cents":
		return "an integer"
	case "attrs":
		return "a JSON object"
	}
	return "of another type"
}

// validate checks every field's range and returns the normalised input.
func (r *orderRequest) validate() (OrderInput, error) {
	var in OrderInput
	switch {
	case r.Item == nil:
		return in, fieldError("item", "item is required")
	case utf8.RuneCountInString(*r.Item) < 1 || utf8.RuneCountInString(*r.Item) > maxItemChars:
		return in, fieldError("item", fmt.Sprintf("item must be 1 to %d characters", maxItemChars))
	case strings.ContainsRune(*r.Item, 0):
		return in, fieldError("item", "item must not contain NUL characters")
	}
	in.Item = *r.Item
	switch {
	case r.Quantity == nil:
		return in, fieldError("quantity", "quantity is required")
	case *r.Quantity < 1 || *r.Quantity > maxQuantity:
		return in, fieldError("quantity", fmt.Sprintf("quantity must be between 1 and %d", maxQuantity))
	}
	in.Quantity = *r.Quantity
	if r.PriceCents != nil {
		if *r.PriceCents < 0 {
			return in, fieldError("price_cents", "price_cents must be 0 or more")
		}
		in.PriceCents = *r.PriceCents
	}
	attrs, err := validateAttrs(r.Attrs)
	if err != nil {
		return in, err
	}
	in.Attrs = attrs
	return in, nil
}

// validateAttrs accepts a JSON object (or null / absent, meaning {}) that
// PostgreSQL's jsonb will take: no NUL characters, bounded nesting.
func validateAttrs(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if raw[0] != '{' {
		return nil, fieldError("attrs", "attrs must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fieldError("attrs", "attrs must be a JSON object")
	}
	if msg := checkJSONValue(v, 0); msg != "" {
		return nil, fieldError("attrs", "attrs "+msg)
	}
	return raw, nil
}

func checkJSONValue(v any, depth int) string {
	if depth > maxAttrsNested {
		return fmt.Sprintf("must not nest deeper than %d levels", maxAttrsNested)
	}
	switch x := v.(type) {
	case string:
		if strings.ContainsRune(x, 0) {
			return "must not contain NUL characters"
		}
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, 0) {
				return "must not contain NUL characters"
			}
			if msg := checkJSONValue(e, depth+1); msg != "" {
				return msg
			}
		}
	case []any:
		for _, e := range x {
			if msg := checkJSONValue(e, depth+1); msg != "" {
				return msg
			}
		}
	}
	return ""
}

// parseID reads the {id} path parameter.
func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, fieldError("id", fmt.Sprintf("order id %q must be a positive integer", s))
	}
	return id, nil
}

// parsePage reads limit and after_id from the query string.
func parsePage(limitStr, afterStr string) (limit int, afterID int64, err error) {
	limit = defaultLimit
	if limitStr != "" {
		n, perr := strconv.Atoi(limitStr)
		if perr != nil || n < 1 || n > maxLimit {
			return 0, 0, fieldError("limit", fmt.Sprintf("limit must be an integer between 1 and %d", maxLimit))
		}
		limit = n
	}
	if afterStr != "" {
		n, perr := strconv.ParseInt(afterStr, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, fieldError("after_id", "after_id must be a non-negative integer")
		}
		afterID = n
	}
	return limit, afterID, nil
}
