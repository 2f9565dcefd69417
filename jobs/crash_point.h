// Test-only crash points. With WANBATCH_CRASH_AT=<point>[:<n>] in the
// environment, the process SIGKILLs itself the n-th time (default: the first)
// it passes <point>. Without it, a crash point is one predictable branch; it
// takes no part in any interface.
#pragma once

namespace wb {
void crash_point(const char* point);
}  // namespace wb
