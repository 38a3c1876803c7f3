#include "token.h"

#include <cstdint>
#include <random>

namespace tributary::locks {

std::string randomToken() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::random_device device;
  std::string out;
  out.reserve(32);
  for (int word = 0; word < 4; ++word) {
    std::uint32_t bits = device();
    for (int nibble = 0; nibble < 8; ++nibble) {
      out.push_back(kHex[bits & 0xFU]);
      bits >>= 4U;
    }
  }
  return out;
}

}  // namespace tributary::locks
