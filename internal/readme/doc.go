// Package readme holds the test that compiles the Go snippets of the
// repository's README.md, so that what a new user copies compiles.
package readme
