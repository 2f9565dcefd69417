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
  // With `tree`, the document is also built there as YamlValues.
  explicit Guard(const YamlLimits& limits, YamlValue* tree = nullptr) : limits_(limits), tree_(tree) {}

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1) throw Refusal{mark.line + 1, "only one YAML document is allowed"};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    node(mark, anchor);
    if (tree_) place(YamlValue{YamlValue::Kind::null, mark.line + 1, {}, {}, {}});
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override {
    throw Refusal{mark.line + 1, "YAML aliases (*name) are not allowed"};
  }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override {
    throw Refusal{mark.line + 1, "YAML anchors (&name) are not allowed"};
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    check_tag(mark, tag);
    node(mark, anchor);
    if (tree_) place(YamlValue{YamlValue::Kind::scalar, mark.line + 1, value, {}, {}});
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, tag, anchor);
    if (tree_) push(YamlValue::Kind::sequence, mark);
  }
  void OnSequenceEnd() override {
    --depth_;
    if (tree_) pop();
  }
  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, tag, anchor);
    if (tree_) push(YamlValue::Kind::map, mark);
  }
  void OnMapEnd() override {
    --depth_;
    if (tree_) pop();
  }

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

  // Building: `open_` holds the collections being filled, innermost last; a map
  // takes a key, then its value (`key_pending_`).
  struct Open {
    YamlValue value;
    bool key_pending = false;
  };
  void place(YamlValue v) {
    if (open_.empty()) {
      *tree_ = std::move(v);
      return;
    }
    Open& o = open_.back();
    if (o.value.kind == YamlValue::Kind::sequence) {
      o.value.items.push_back(std::move(v));
    } else if (!o.key_pending) {
      o.value.entries.emplace_back(std::move(v), YamlValue{});
      o.key_pending = true;
    } else {
      o.value.entries.back().second = std::move(v);
      o.key_pending = false;
    }
  }
  void push(YamlValue::Kind kind, const YAML::Mark& mark) {
    open_.push_back(Open{YamlValue{kind, mark.line + 1, {}, {}, {}}, false});
  }
  void pop() {
    YamlValue v = std::move(open_.back().value);
    open_.pop_back();
    place(std::move(v));
  }

  const YamlLimits& limits_;
  YamlValue* tree_;
  std::vector<Open> open_;
  size_t nodes_ = 0;
  size_t depth_ = 0;
  int documents_ = 0;
};

// Runs `parse`, turning each way a parse fails into `error`.
template <class Parse>
bool catching(YamlError& error, Parse&& parse) {
  try {
    parse();
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

// Streams the document's events through a Guard (which builds `tree` when given).
void guard_pass(const std::string& text, const YamlLimits& limits, YamlValue* tree) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  Guard guard(limits, tree);
  while (parser.HandleNextDocument(guard)) {
  }
}

}  // namespace

bool load_yaml_safely(const std::string& text, const YamlLimits& limits, YAML::Node& out, YamlError& error) {
  return catching(error, [&] {
    guard_pass(text, limits, nullptr);
    out = YAML::Load(text);
  });
}

bool parse_yaml_safely(const std::string& text, const YamlLimits& limits, YamlValue& out, YamlError& error) {
  return catching(error, [&] {
    out = YamlValue{};
    guard_pass(text, limits, &out);
  });
}

const YamlValue* YamlValue::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k.kind == Kind::scalar && k.text == key) return &v;
  return nullptr;
}

const YamlValue* YamlValue::find_last(std::string_view key) const {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->first.kind == Kind::scalar && it->first.text == key) return &it->second;
  return nullptr;
}

bool yaml_integer(const YamlValue& v, long long& out) {
  return v.is_scalar() && YAML::convert<long long>::decode(YAML::Node(v.text), out);
}

bool yaml_number(const YamlValue& v, double& out) {
  return v.is_scalar() && YAML::convert<double>::decode(YAML::Node(v.text), out);
}

int yaml_line(const YAML::Node& node) {
  YAML::Mark m = node.Mark();
  return m.is_null() ? 0 : m.line + 1;
}

}  // namespace wb
