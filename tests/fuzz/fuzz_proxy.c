/* libFuzzer target: the PROXY protocol header parser. */
#include "proto/proxy_parse.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_info pi;
	if (proxy_parse(data, size, &pi) == PROXY_OK && (pi.length == 0 || pi.length > size))
		abort(); /* a header must lie within what was read */
	return 0;
}
