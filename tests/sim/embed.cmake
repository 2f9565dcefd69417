# Turns a binary file into a C++ source defining <NS>::sample_mp4() (NS: sim unless given).
if(NOT NS)
  set(NS sim)
endif()
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "#include <string_view>\nnamespace ${NS} {\nstatic const unsigned char kData[] = {${bytes}};\nstd::string_view sample_mp4() { return {reinterpret_cast<const char*>(kData), sizeof kData}; }\n}\n")
