# Warnings and options shared by all our own targets (never by generated code).
add_library(tributary_warnings INTERFACE)
target_compile_options(tributary_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wconversion -Wsign-conversion -Wnull-dereference -Wdouble-promotion
  -Wformat=2 -Wimplicit-fallthrough
  $<$<CXX_COMPILER_ID:GNU>:-Wduplicated-cond -Wlogical-op -Wsuggest-override>
  $<$<BOOL:${TRIBUTARY_WERROR}>:-Werror>)

# tributary_cc_library(NAME x SRCS ... DEPS ... [PRIVATE_DEPS ...])
# Produces tributary_x with alias tributary::x; include/ is public, src/ private.
function(tributary_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(tributary_${ARG_NAME} STATIC ${ARG_SRCS})
  add_library(tributary::${ARG_NAME} ALIAS tributary_${ARG_NAME})
  target_include_directories(tributary_${ARG_NAME}
    PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(tributary_${ARG_NAME} PUBLIC ${ARG_DEPS}
    PRIVATE tributary_warnings ${ARG_PRIVATE_DEPS})
endfunction()

# tributary_cc_binary(NAME x SRCS ... DEPS ...)
function(tributary_cc_binary)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE tributary_warnings ${ARG_DEPS})
endfunction()
