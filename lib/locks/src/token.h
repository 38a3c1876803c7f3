#pragma once

#include <string>

namespace tributary::locks {

/// 128 random bits from the OS (std::random_device, /dev/urandom on Linux) as 32 hex digits.
std::string randomToken();

}  // namespace tributary::locks
