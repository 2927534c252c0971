// The playground page tessera-serve answers GET / with: src/serve/playground.html, compiled into
// the binary at build time (cmake/embed_text.cmake writes it into a generated .cpp as a raw
// string), so the server needs no files beside it.
#pragma once

#include <string_view>

namespace tessera::serve {

// The page's HTML (UTF-8), valid for the program's lifetime.
std::string_view playground_html();

}  // namespace tessera::serve
