// The build's version and git revision. The definitions are generated at build
// time by cmake/revision.cmake (build/generated/version.cpp).
#pragma once

#include <string>

namespace wb {

// "0.1.0": the project version in CMakeLists.txt.
const char* wanbatch_version();
// `git rev-parse --short=12 HEAD` of the source at build time, "-dirty" appended
// when tracked files had changes; "unknown" when not built from a git checkout.
const char* wanbatch_revision();

// What `wanbatch --version` prints: "wanbatch 0.1.0 (git 0123456789ab)".
inline std::string version_text() {
  return std::string("wanbatch ") + wanbatch_version() + " (git " + wanbatch_revision() + ")";
}

}  // namespace wb
