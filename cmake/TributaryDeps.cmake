# Every external dependency is found here, the way its Debian 12 package supports.
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(OpenSSL 3 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
if(TRIBUTARY_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
# hiredis 0.14: Debian's HiredisConfig.cmake defines no imported target (only variables, and its
# version file breaks on a version-less find_package), so use hiredis.pc. Both names work:
# PkgConfig::HIREDIS and hiredis::hiredis. Include as <hiredis/hiredis.h>.
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET GLOBAL hiredis)
if(NOT TARGET hiredis::hiredis)
  add_library(hiredis::hiredis ALIAS PkgConfig::HIREDIS)
endif()
# Installer (lib/installer): libgit2 (pkg-config only), cpprestsdk (CMake config), libarchive.
if(NOT TARGET PkgConfig::LIBGIT2)
  pkg_check_modules(LIBGIT2 REQUIRED IMPORTED_TARGET GLOBAL libgit2)
endif()
if(NOT TARGET cpprestsdk::cpprest)
  find_package(cpprestsdk CONFIG REQUIRED)
endif()
if(NOT TARGET PkgConfig::LIBARCHIVE)
  pkg_check_modules(LIBARCHIVE REQUIRED IMPORTED_TARGET GLOBAL libarchive)
endif()
# CLI (cli/): Connector/SyncJob manifests. yaml-cpp 0.7 (libyaml-cpp-dev) defines the target
# `yaml-cpp`.
if(NOT TARGET yaml-cpp)
  find_package(yaml-cpp REQUIRED)
endif()
