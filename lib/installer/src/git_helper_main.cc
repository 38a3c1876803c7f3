// tributary-git-helper: runs one libgit2 remote operation for the installer (see git_process.h).
// Not meant to be run by hand: it reads a JSON request on stdin and answers on stdout.

#include "git_process.h"

int main() { return tributary::installer::internal::gitHelperMain(); }
