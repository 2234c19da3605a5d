# DS_SANITIZE and DS_FUZZ: compile and link flags for every target (set before any module is added).
if(DS_SANITIZE)
  if(NOT DS_SANITIZE MATCHES "^[a-z,]+$")
    message(FATAL_ERROR "DS_SANITIZE='${DS_SANITIZE}' is not a list of sanitizer names like address,undefined")
  endif()
  add_compile_options(-fsanitize=${DS_SANITIZE} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${DS_SANITIZE})
  if(DS_SANITIZE MATCHES "undefined")
    # A UBSan report fails the run instead of printing and going on.
    add_compile_options(-fno-sanitize-recover=undefined)
    # clang 14's -fsanitize=function cannot compile the bench client's C++20 coroutines ("Cannot represent
    # a difference across sections"); the other UBSan checks stay on.
    add_compile_options(-fno-sanitize=function)
    add_link_options(-fno-sanitize-recover=undefined)
  endif()
  message(STATUS "deltaserve: sanitizers ${DS_SANITIZE}")
endif()
if(DS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "DS_FUZZ=ON needs clang (libFuzzer): configure with CXX=clang++ CC=clang")
  endif()
  # Coverage feedback for libFuzzer in the src/ modules (ds_module adds it; the test executables,
  # linked without libFuzzer, run from the same build through the sanitizer runtime's weak hooks).
  # Not in the HTTP bench client (src/bench) nor in tests: clang 14 cannot emit debug info for their
  # C++20 coroutines under this instrumentation ("Cannot represent a difference across sections"),
  # and no fuzz target reaches them.
  set(DS_FUZZ_COVERAGE -fsanitize=fuzzer-no-link)
  message(STATUS "deltaserve: libFuzzer targets ON")
endif()
