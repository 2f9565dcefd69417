#include "jobs/log_context.h"

#include <utility>

namespace wb {

namespace {
thread_local LogFields current;
}  // namespace

const LogFields& log_fields() { return current; }

LogScope::LogScope(const std::string& key, const std::string& request_id) : saved_(current) {
  auto slash = key.find('/');
  current.batch = key.substr(0, slash);
  current.shot = slash == std::string::npos ? "" : key.substr(slash + 1);
  current.request_id = request_id;
}

LogScope::~LogScope() { current = std::move(saved_); }

}  // namespace wb
