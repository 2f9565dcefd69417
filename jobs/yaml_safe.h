// Loading YAML from untrusted files. yaml-cpp follows aliases while walking, so an
// alias bomb or a self-referring alias explodes; this loader first streams the
// document's events and refuses anchors, aliases, tags beyond the core ones, more
// than one document, too many nodes or too deep a nesting, and only then builds
// the node tree.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

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

// 1-based line of a node, 0 when unknown.
int yaml_line(const YAML::Node& node);

}  // namespace wb
