#include "jobs/yaml_safe.h"

#include <yaml-cpp/eventhandler.h>

#include <sstream>

namespace wb {

namespace {

struct Refusal {
  int line;
  std::string message;
};

class Guard : public YAML::EventHandler {
 public:
  explicit Guard(const YamlLimits& limits) : limits_(limits) {}

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1) throw Refusal{mark.line + 1, "only one YAML document is allowed"};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { node(mark, anchor); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw Refusal{mark.line + 1, "YAML aliases (*name) are not allowed"};
  }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override {
    throw Refusal{mark.line + 1, "YAML anchors (&name) are not allowed"};
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string&) override {
    check_tag(mark, tag);
    node(mark, anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, tag, anchor);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, tag, anchor);
  }
  void OnMapEnd() override { --depth_; }

 private:
  void node(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) throw Refusal{mark.line + 1, "YAML anchors are not allowed"};
    if (++nodes_ > limits_.max_nodes)
      throw Refusal{mark.line + 1,
                    "document has more than " + std::to_string(limits_.max_nodes) + " nodes"};
  }
  void open(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor) {
    check_tag(mark, tag);
    node(mark, anchor);
    if (++depth_ > limits_.max_depth)
      throw Refusal{mark.line + 1,
                    "nesting is deeper than " + std::to_string(limits_.max_depth) + " levels"};
  }
  static void check_tag(const YAML::Mark& mark, const std::string& tag) {
    // "?" and "!" are the implicit tags; explicit ones such as !!binary are refused.
    if (!tag.empty() && tag != "?" && tag != "!")
      throw Refusal{mark.line + 1, "YAML tags (" + tag + ") are not allowed"};
  }

  const YamlLimits& limits_;
  size_t nodes_ = 0;
  size_t depth_ = 0;
  int documents_ = 0;
};

}  // namespace

bool load_yaml_safely(const std::string& text, const YamlLimits& limits, YAML::Node& out,
                      YamlError& error) {
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    Guard guard(limits);
    while (parser.HandleNextDocument(guard)) {
    }
    out = YAML::Load(text);
    return true;
  } catch (const Refusal& r) {
    error = {r.line, r.message};
  } catch (const YAML::Exception& e) {
    error = {e.mark.is_null() ? 0 : e.mark.line + 1, e.msg};
  } catch (const std::exception& e) {
    error = {0, std::string("cannot parse YAML: ") + e.what()};
  }
  return false;
}

int yaml_line(const YAML::Node& node) {
  YAML::Mark m = node.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

}  // namespace wb
