// base64 decoding, standard or URL alphabet, padding optional.
#pragma once

#include <string>
#include <string_view>

namespace apiwarden {

// Decodes into out; false on characters outside both alphabets or an impossible length.
bool base64Decode(std::string_view in, std::string& out);

}  // namespace apiwarden
