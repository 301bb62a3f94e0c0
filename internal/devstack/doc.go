// Package devstack launches the real infrastructure Switchyard depends on —
// Consul agents and PostgreSQL 15 servers — as local child processes bound to
// free loopback ports.
//
// It is used by the `switchyard dev` command, which runs the whole stack
// with persistent data directories, and by the tests through test/harness
// (which adds testing.T helpers and a fault-injecting TCP proxy). It reads no
// environment variables: the caller passes binaries' locations in the
// options.
//
// Every child runs in its own process group and is sent SIGKILL by the kernel
// if the thread that started it dies (Linux parent-death signal), so a crashed
// or killed parent does not leave agents or postmasters behind. Kill,
// and Stop once its grace period is over, SIGKILL the child's process group
// and all its descendants.
//
// When the current user is root, PostgreSQL programs (which refuse to run as
// root) are run as the "postgres" OS user and the directories they use are
// chowned to it.
package devstack
