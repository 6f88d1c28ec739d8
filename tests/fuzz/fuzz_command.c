/* libFuzzer target: command framing, command splitting and MAIL/RCPT path
 * parsing, the way a session feeds them. */
#include "proto/smtp_parse.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_line_reader r;
	smtp_line_reader_init(&r, 512);
	const char *p = (const char *)data;
	while (size > 0) {
		const char *line;
		size_t len, used;
		enum smtp_line_status st = smtp_line_next(&r, p, size, &line, &len, &used);
		if (st == SMTP_LINE_NEED_MORE)
			break;
		if (st == SMTP_LINE_OK) {
			struct smtp_cmd cmd;
			if (smtp_parse_command(line, len, &cmd) == SMTP_CMD_OK) {
				struct smtp_path path;
				smtp_parse_path(SMTP_PATH_MAIL, cmd.arg, cmd.arg_len, false, &path);
				smtp_parse_path(SMTP_PATH_RCPT, cmd.arg, cmd.arg_len, true, &path);
				for (size_t i = 0; i < path.nparams && i < SMTP_PARAMS_MAX; i++) {
					char out[SMTP_PATH_MAX + 1];
					if (path.params[i].value)
						smtp_xtext_decode(path.params[i].value, path.params[i].value_len, out, sizeof out);
				}
				uint64_t n;
				smtp_parse_size(cmd.arg, cmd.arg_len, &n);
				smtp_valid_helo(cmd.arg, cmd.arg_len);
			}
		}
		p += used;
		size -= used;
	}
	return 0;
}
