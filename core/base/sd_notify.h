/* sd_notify — tells systemd (Type=notify) that the server is ready,
 * reloading or stopping, through $NOTIFY_SOCKET; without libsystemd, as the
 * protocol is one datagram. A no-op when not run by systemd. */
#ifndef LUASMTPD_SD_NOTIFY_H
#define LUASMTPD_SD_NOTIFY_H

void sd_notify_state(const char *state);

#endif
