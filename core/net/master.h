/* master — with --workers N: the master binds the listeners, forks N
 * workers that share them, restarts a worker that dies, reloads on HUP by
 * starting a new generation of workers while the old one drains, and
 * stops them all on TERM/INT. */
#ifndef LUASMTPD_MASTER_H
#define LUASMTPD_MASTER_H

struct server;

/* Runs the master until every worker has stopped; returns the exit code. */
int master_run(struct server *srv, unsigned nworkers);

#endif
