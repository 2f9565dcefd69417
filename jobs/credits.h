// Credits as people see them and budgets add them up: whole micro-credits.
//
// The provider states costs and balances as JSON numbers (0.1, 0.45). Added up
// as doubles they pick up noise (0.1 + 0.2 + 0.3 is 0.6000000000000001), which
// then shows in reports, sidecars, command output and log lines. So every sum of
// money is kept in integer micro-credits (1 credit = 1,000,000; far below any
// price the provider quotes), converted once from the provider's double, and
// every figure shown to a person is written back from that integer.
//
//   MicroCredits total = 0;
//   for (double c : costs) total += to_micro(c);
//   log("spent {} credits", credits_text(total));     // "0.6"
//   j["total_cost"] = credits_json(total);             // json_text(j): 0.6
//
// Header only, no state; safe from any thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace wb {

using MicroCredits = int64_t;

inline constexpr MicroCredits kMicroPerCredit = 1'000'000;

// The largest magnitude to_micro() returns: just under a billion credits. Fifteen
// digits, so from_micro() of any such value reads back as exactly those digits.
inline constexpr MicroCredits kMaxMicroCredits = 999'999'999'999'999;

// `credits` rounded to the nearest micro-credit. NaN gives 0; a magnitude past
// kMaxMicroCredits (infinity included) is clamped to it.
inline MicroCredits to_micro(double credits) {
  if (std::isnan(credits)) return 0;
  double micro = credits * static_cast<double>(kMicroPerCredit);
  if (micro >= static_cast<double>(kMaxMicroCredits)) return kMaxMicroCredits;
  if (micro <= -static_cast<double>(kMaxMicroCredits)) return -kMaxMicroCredits;
  return std::llround(micro);
}

// The double nearest to micro / 1,000,000: from_micro(600000) == 0.6, the same
// double as the literal 0.6. For computing with a double API; never for sums.
inline double from_micro(MicroCredits micro) {
  return static_cast<double>(micro) / static_cast<double>(kMicroPerCredit);
}

// The exact decimal: "0.6", "12", "-0.000001", "1234567.89". No exponent, no
// trailing zeros, at most six decimals; what a person reads in text and logs.
inline std::string credits_text(MicroCredits micro) {
  // Unsigned, so that the magnitude of INT64_MIN is representable too.
  uint64_t magnitude = micro < 0 ? 0 - static_cast<uint64_t>(micro) : static_cast<uint64_t>(micro);
  std::string text = (micro < 0 ? "-" : "") + std::to_string(magnitude / kMicroPerCredit);
  if (uint64_t fraction = magnitude % kMicroPerCredit; fraction != 0) {
    char digits[8];
    std::snprintf(digits, sizeof digits, "%06llu", static_cast<unsigned long long>(fraction));
    std::string decimals(digits);
    decimals.erase(decimals.find_last_not_of('0') + 1);
    text += "." + decimals;
  }
  return text;
}

// A JSON number for a file people and tools read (report.json, sidecars): the
// double from_micro(micro). Write the document with json_text()
// (jobs/json_safe.h), which prints it as credits_text() does (0.6, 2,
// 0.000001); nlohmann's own dump() does not always (1.9995559999999999 for
// 1.999556, 2.0 for 2). Read back, to_micro() gives `micro` again.
inline nlohmann::json credits_json(MicroCredits micro) { return nlohmann::json(from_micro(micro)); }

}  // namespace wb
