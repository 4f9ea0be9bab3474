# Project-wide warning flags. -Wno-mismatched-new-delete: g++ 12 reports a false
# positive on every Asio coroutine frame.
add_library(mailroom_options INTERFACE)
target_compile_options(mailroom_options INTERFACE -Wall -Wextra -Wpedantic
  $<$<CXX_COMPILER_ID:GNU>:-Wno-mismatched-new-delete>)
# Asio is compiled once (src/net/asio_impl.cpp) instead of in every translation unit.
target_compile_definitions(mailroom_options INTERFACE
  BOOST_ASIO_SEPARATE_COMPILATION BOOST_ASIO_NO_DEPRECATED BOOST_ALLOW_DEPRECATED_HEADERS)
# Hardening as Debian's dpkg-buildflags gives its packages: fortified libc
# calls where the code is optimised (not in the Debug build, nor where
# AddressSanitizer intercepts them: the sanitizer and fuzzing builds), and a
# read-only GOT resolved at start (full RELRO, -z now).
if(NOT MAILROOM_SANITIZE AND NOT MAILROOM_FUZZ)
  target_compile_definitions(mailroom_options INTERFACE
    $<$<NOT:$<CONFIG:Debug>>:_FORTIFY_SOURCE=2>)
endif()
target_link_options(mailroom_options INTERFACE -Wl,-z,relro -Wl,-z,now)
