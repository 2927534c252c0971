# cmake -DIN=file -DOUT=file.cpp -DNAMESPACE=ns -DFUNCTION=name -P embed_text.cmake
# Writes OUT: a C++ function `std::string_view NAMESPACE::FUNCTION()` returning IN's text as a raw
# string literal. Used for the serving playground page (src/serve/playground.html).
file(READ "${IN}" _text)
set(_delimiter "TESSERA_EMBED")
string(FIND "${_text}" ")${_delimiter}\"" _clash)
if(NOT _clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains )${_delimiter}\", which would end the raw string early")
endif()
file(WRITE "${OUT}.tmp"
     "// Generated from ${IN} by cmake/embed_text.cmake; do not edit.\n"
     "#include <string_view>\n\n"
     "namespace ${NAMESPACE} {\n"
     "std::string_view ${FUNCTION}() {\n"
     "  static constexpr std::string_view kText = R\"${_delimiter}(${_text})${_delimiter}\";\n"
     "  return kText;\n"
     "}\n"
     "}  // namespace ${NAMESPACE}\n")
# Rewrite only on change, so an unchanged page rebuilds nothing.
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
