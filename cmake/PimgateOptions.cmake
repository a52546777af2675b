# Warning and sanitizer flags shared by every pimgate target (applied through pimgate_options).
add_library(pimgate_options INTERFACE)
add_library(pimgate::options ALIAS pimgate_options)
target_compile_options(pimgate_options INTERFACE -Wall -Wextra -Wno-unused-parameter)
if(PIMGATE_WERROR)
  target_compile_options(pimgate_options INTERFACE -Werror)
endif()
if(PIMGATE_ASAN AND PIMGATE_TSAN)
  message(FATAL_ERROR "PIMGATE_ASAN and PIMGATE_TSAN are exclusive")
endif()
if(PIMGATE_ASAN)
  target_compile_options(pimgate_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                   -fno-sanitize-recover=undefined)
  target_link_options(pimgate_options INTERFACE -fsanitize=address,undefined)
endif()
if(PIMGATE_TSAN)
  target_compile_options(pimgate_options INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(pimgate_options INTERFACE -fsanitize=thread)
endif()
if(PIMGATE_FUZZ AND CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # Coverage for libFuzzer plus ASan+UBSan in every pimgate target; fuzz/ links libFuzzer's main.
  target_compile_options(pimgate_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                                                   -fno-sanitize-recover=undefined
                                                   -fno-omit-frame-pointer)
  target_link_options(pimgate_options INTERFACE -fsanitize=address,undefined)
endif()
