// Test-only crash points. With WANBATCH_CRASH_AT=<point>[:<n>] in the
// environment, the process SIGKILLs itself the n-th time (default: the first)
// it passes <point>; with WANBATCH_STOP_AT=<point>[:<n>] it SIGSTOPs itself
// there instead, so a test can change the world at that exact step and then
// SIGCONT it. Without them, a crash point is one predictable branch; it takes
// no part in any interface.
#pragma once

namespace wb {
void crash_point(const char* point);
}  // namespace wb
