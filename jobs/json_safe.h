// JSON from outside (the network, a store that may be garbled) parsed with a
// bound on nesting, and JSON we write for people with numbers as they were meant. nlohmann::json recurses when it dumps, compares and (before
// 3.11) destroys values, so a body nested 100,000 levels deep overflows the
// stack: such text is refused before it is parsed.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

namespace wb {

constexpr int kMaxJsonDepth = 64;

// Whether no array or object in `text` is nested deeper than `max_depth`
// (brackets inside strings do not count). Linear, no recursion.
bool json_depth_within(std::string_view text, int max_depth = kMaxJsonDepth);

// The parsed value, or nullopt when `text` is not JSON or is nested too deep.
// A number too large for a double (1e999) reads as null, not as a failed parse.
std::optional<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth);

// `j` as j.dump(indent) writes it (same layout, same string escapes, throws the
// same on invalid UTF-8), except that each floating-point number is written in
// its shortest form that reads back as the same double, without an exponent
// between 1e-7 and 1e16: 0.6, 2, 0.000001 (nlohmann's dump() writes some doubles
// with 17 digits, 1.9995559999999999, and whole ones as 2.0). So a figure
// rounded to micro-credits (jobs/credits.h) shows exactly. Recurses per level:
// for values of bounded depth (ours, or parsed by parse_json_bounded).
std::string json_text(const nlohmann::json& j, int indent = -1);
// The same, appended to `out` as a value nested `level` deep (its lines indented to match).
void append_json_text(std::string& out, const nlohmann::json& j, int indent, int level);

}  // namespace wb
