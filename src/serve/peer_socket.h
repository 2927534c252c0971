// Noticing that an HTTP client hung up while its non-streaming request runs. cpp-httplib 0.11
// gives a handler no access to its connection's socket, only the connection's endpoints, so we
// find the socket by them and peek at it: a peer that closed (EOF) or reset the connection has
// gone. Linux only (/proc/self/fd).
#pragma once

#include <string>

namespace tessera::serve {

// The file descriptor of this process's connected TCP socket whose local and remote endpoints are
// these (numeric addresses as getnameinfo(NI_NUMERICHOST) writes them, as cpp-httplib's Request
// holds them), or -1 when there is none. Scans /proc/self/fd: call it once per request.
int find_connected_socket(const std::string& local_addr, int local_port,
                          const std::string& remote_addr, int remote_port);

// True when the peer of connected socket `fd` has closed its side or reset the connection. Peeks
// without blocking and without consuming data (a pipelined next request stays readable), so the
// connection's owner reads on unaffected.
bool peer_hung_up(int fd);

}  // namespace tessera::serve
