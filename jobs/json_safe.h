// JSON from outside (the network, a store that may be garbled) parsed with a
// bound on nesting. nlohmann::json recurses when it dumps, compares and (before
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
std::optional<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace wb
