#include "glob.h"

#include "tributary/common/strings.h"
#include "tributary/connectors/text.h"

namespace tributary::connectors::filesystem {
namespace {

// Validates a bracket expression starting at p[i] == '['; returns the index after ']' or npos.
std::size_t classEnd(const std::u32string& p, std::size_t i) {
  std::size_t j = i + 1;
  if (j < p.size() && (p[j] == '!' || p[j] == '^')) {
    ++j;
  }
  if (j < p.size() && p[j] == ']') {
    ++j;  // A leading ']' is literal.
  }
  for (; j < p.size(); ++j) {
    if (p[j] == '\\') {
      ++j;
    } else if (p[j] == ']') {
      return j + 1;
    }
  }
  return std::u32string::npos;
}

bool classMatches(const std::u32string& p, std::size_t i, std::size_t end, char32_t c) {
  // The class's content is p[i+1 .. end-2]; p[end-1] is its closing ']'.
  const std::size_t last = end - 1;
  std::size_t j = i + 1;
  bool negate = false;
  if (p[j] == '!' || p[j] == '^') {
    negate = true;
    ++j;
  }
  bool found = false;
  while (j < last) {
    char32_t lo = p[j];
    if (lo == '\\' && j + 1 < last) {
      lo = p[++j];
    }
    ++j;
    char32_t hi = lo;
    if (j + 1 < last && p[j] == '-') {
      hi = p[j + 1];
      j += 2;
      if (hi == '\\' && j < last) {
        hi = p[j++];
      }
    }
    if (c >= lo && c <= hi) {
      found = true;
    }
  }
  return found != negate;
}

// One name against one segment pattern (iterative wildcard matching with backtracking on '*').
bool segmentMatches(const std::u32string& p, const std::u32string& s) {
  std::size_t pi = 0;
  std::size_t si = 0;
  std::size_t star_p = std::u32string::npos;
  std::size_t star_s = 0;
  while (si < s.size()) {
    if (pi < p.size()) {
      const char32_t pc = p[pi];
      if (pc == '*') {
        star_p = ++pi;
        star_s = si;
        continue;
      }
      if (pc == '?') {
        ++pi;
        ++si;
        continue;
      }
      if (pc == '[') {
        const std::size_t end = classEnd(p, pi);
        if (classMatches(p, pi, end, s[si])) {
          pi = end;
          ++si;
          continue;
        }
      } else {
        char32_t literal = pc;
        std::size_t next = pi + 1;
        if (pc == '\\' && pi + 1 < p.size()) {
          literal = p[pi + 1];
          next = pi + 2;
        }
        if (literal == s[si]) {
          pi = next;
          ++si;
          continue;
        }
      }
    }
    if (star_p == std::u32string::npos) {
      return false;
    }
    pi = star_p;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') {
    ++pi;
  }
  return pi == p.size();
}

bool segmentsMatch(const std::vector<std::u32string>& pats, std::size_t pi,
                   const std::vector<std::u32string>& names, std::size_t ni) {
  if (pi == pats.size()) {
    return ni == names.size();
  }
  if (pats[pi] == U"**") {
    for (std::size_t k = ni; k <= names.size(); ++k) {
      if (segmentsMatch(pats, pi + 1, names, k)) {
        return true;
      }
    }
    return false;
  }
  if (ni == names.size()) {
    return false;
  }
  return segmentMatches(pats[pi], names[ni]) && segmentsMatch(pats, pi + 1, names, ni + 1);
}

std::vector<std::u32string> splitPath(const std::u32string& path) {
  std::vector<std::u32string> out;
  std::u32string current;
  for (const char32_t c : path) {
    if (c == '/') {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  out.push_back(std::move(current));
  return out;
}

}  // namespace

absl::StatusOr<Glob> Glob::compile(std::string_view pattern) {
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        strings::cat("invalid glob \"", printable(pattern), "\": ", why));
  };
  auto decoded = decodeUtf8(pattern);
  if (!decoded) {
    return bad("not valid UTF-8");
  }
  Glob glob;
  glob.pattern_ = std::string(pattern);
  std::u32string p = *decoded;
  if (!p.empty() && p.back() == '/') {
    glob.directories_only_ = true;
    while (!p.empty() && p.back() == '/') {
      p.pop_back();
    }
  }
  if (!p.empty() && p.front() == '/') {
    glob.anchored_ = true;
    p.erase(0, p.find_first_not_of(U'/'));
  }
  if (p.empty()) {
    return bad("it matches nothing (empty pattern)");
  }
  if (p.find(U'/') != std::u32string::npos) {
    glob.anchored_ = true;
  }
  glob.segments_ = splitPath(p);
  for (const auto& segment : glob.segments_) {
    if (segment.empty()) {
      return bad("empty path segment ('//')");
    }
    for (std::size_t i = 0; i < segment.size(); ++i) {
      if (segment[i] == '\\') {
        if (i + 1 == segment.size()) {
          return bad("it ends with a lone backslash");
        }
        ++i;
      } else if (segment[i] == '[') {
        const std::size_t end = classEnd(segment, i);
        if (end == std::u32string::npos) {
          return bad("unterminated character class '['");
        }
        i = end - 1;
      }
    }
  }
  return glob;
}

bool Glob::matches(std::string_view path, bool is_directory) const {
  if (directories_only_ && !is_directory) {
    return false;
  }
  auto decoded = decodeUtf8(path);
  if (!decoded) {
    return false;
  }
  const auto names = splitPath(*decoded);
  if (!anchored_) {
    return segmentMatches(segments_.front(), names.back());
  }
  return segmentsMatch(segments_, 0, names, 0);
}

}  // namespace tributary::connectors::filesystem
