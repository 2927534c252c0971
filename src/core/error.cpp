// Message assembly for the check-macro family.
#include "core/error.h"

#include <mpi.h>

#include <sstream>

#include "core/log.h"

namespace tessera::core {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, len);
}

void throw_check_failure(const char* library, const char* call_text, const char* doing,
                         const std::string& library_message, const char* file, int line) {
  std::ostringstream os;
  os << doing << ": " << library << " call `" << call_text << "` failed: " << library_message
     << " (" << rank_prefix() << " at " << file << ":" << line << ")";
  throw Error(os.str());
}

}  // namespace tessera::core
