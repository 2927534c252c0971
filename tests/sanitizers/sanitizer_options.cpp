// Default options of the sanitizer runtimes for every executable of the TESSERA_SANITIZE build
// (tests and fuzzers): the runtimes call these hooks at start-up, so the same options hold
// under ctest, mpirun, gtest discovery and a plain shell, and ASAN_OPTIONS / LSAN_OPTIONS /
// UBSAN_OPTIONS in the environment still override them. docs/RELIABILITY.md explains each.

extern "C" {

// detect_leaks: LeakSanitizer at exit. fast_unwind_on_malloc=0: full stacks through Open MPI's
// frame-pointer-less code, so lsan.supp's rules can match MPI_Init's frames. Stop on the first
// error; report a new/delete mismatch and stack use after return too.
const char* __asan_default_options() {
  return "detect_leaks=1:fast_unwind_on_malloc=0:abort_on_error=0:halt_on_error=1:"
         "detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1";
}

// The committed suppression file (its path compiled in); what it suppressed is not printed.
// intercept_tls_get_addr=0: LLVM 14's LeakSanitizer crashes scanning the dynamic TLS blocks it
// records from __tls_get_addr under Debian 12's glibc 2.36 ("Tracer caught signal 11" after
// "DTLS ... at 0x...502e"). Without the interception those blocks (TLS of dlopen'ed libraries)
// are not scanned, which can only add reports, never hide one; static TLS, where our
// thread_local variables live, is still scanned (use_tls=1).
const char* __lsan_default_options() {
  return "suppressions=" TESSERA_LSAN_SUPPRESSIONS
         ":print_suppressions=0:use_tls=1:intercept_tls_get_addr=0";
}

// Every finding is fatal (the build also uses -fno-sanitize-recover) and shows its stack.
const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

}  // extern "C"
