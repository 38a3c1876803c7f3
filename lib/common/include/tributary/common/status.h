#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Debian 12's abseil has no status macros; these are the two we need.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define TRIBUTARY_RETURN_IF_ERROR(expr)                                       \
  do {                                                                        \
    if (::absl::Status tributary_status_ = (expr); !tributary_status_.ok()) { \
      return tributary_status_;                                               \
    }                                                                         \
  } while (false)

#define TRIBUTARY_STATUS_CONCAT_INNER(a, b) a##b
#define TRIBUTARY_STATUS_CONCAT(a, b) TRIBUTARY_STATUS_CONCAT_INNER(a, b)
#define TRIBUTARY_ASSIGN_OR_RETURN(lhs, rexpr)                                                 \
  TRIBUTARY_ASSIGN_OR_RETURN_IMPL(TRIBUTARY_STATUS_CONCAT(tributary_statusor_, __LINE__), lhs, \
                                  rexpr)
#define TRIBUTARY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                    \
  if (!tmp.ok()) {                                       \
    return std::move(tmp).status();                      \
  }                                                      \
  lhs = *std::move(tmp)
// NOLINTEND(bugprone-macro-parentheses)
