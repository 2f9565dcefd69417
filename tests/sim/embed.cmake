# Turns a binary file into a C++ source defining sim::sample_mp4().
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "#include <string_view>\nnamespace sim {\nstatic const unsigned char kData[] = {${bytes}};\nstd::string_view sample_mp4() { return {reinterpret_cast<const char*>(kData), sizeof kData}; }\n}\n")
