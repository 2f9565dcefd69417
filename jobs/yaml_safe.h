// Loading YAML from untrusted files. yaml-cpp follows aliases while walking, so an
// alias bomb or a self-referring alias explodes; this loader first streams the
// document's events and refuses anchors, aliases, tags beyond the core ones, more
// than one document, too many nodes or too deep a nesting, and only then builds
// the node tree.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wb {

struct YamlLimits {
  size_t max_nodes = 200000;
  size_t max_depth = 32;
};

// A problem in a YAML text, with a 1-based line (0 when unknown).
struct YamlError {
  int line = 0;
  std::string message;
};

// Parses `text`. On failure returns false and fills `error`.
bool load_yaml_safely(const std::string& text, const YamlLimits& limits, YAML::Node& out,
                      YamlError& error);

// A document as plain values, built in the same pass that checks it: one scan of
// the text instead of two (the check, then YAML::Load), and lookups without
// yaml-cpp's node machinery. A 10,000-shot manifest parses in about half the time.
struct YamlValue {
  enum class Kind { null, scalar, sequence, map };
  Kind kind = Kind::null;
  int line = 0;  // 1-based, 0 when unknown
  std::string text;  // a scalar's value
  std::vector<YamlValue> items;  // a sequence's
  std::vector<std::pair<YamlValue, YamlValue>> entries;  // a map's, in document order

  bool is_null() const { return kind == Kind::null; }
  bool is_scalar() const { return kind == Kind::scalar; }
  bool is_sequence() const { return kind == Kind::sequence; }
  bool is_map() const { return kind == Kind::map; }
  // The value of the first entry whose key is the scalar `key`, or nullptr
  // (a map only; yaml-cpp's operator[] answers the same).
  const YamlValue* find(std::string_view key) const;
  // The value of the last such entry (as a later duplicate would win in YAML::Load).
  const YamlValue* find_last(std::string_view key) const;
};

// The same checks and limits as load_yaml_safely, into a YamlValue.
bool parse_yaml_safely(const std::string& text, const YamlLimits& limits, YamlValue& out, YamlError& error);

// A scalar read as yaml-cpp reads it (YAML::convert), so that a number in a
// manifest means what it means in the config.
bool yaml_integer(const YamlValue& v, long long& out);
bool yaml_number(const YamlValue& v, double& out);

// 1-based line of a node, 0 when unknown.
int yaml_line(const YAML::Node& node);

}  // namespace wb
