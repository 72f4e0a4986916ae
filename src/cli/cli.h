/* cli: the davit command line. One file per command; main.c dispatches. */
#ifndef DV_CLI_CLI_H
#define DV_CLI_CLI_H

#define DV_VERSION "0.1.0"

/* Each command gets argv with argv[0] = the command name; returns the exit
 * status (0 ok, 1 failure, 2 usage error). */
int dv_cli_proxy(int argc, char **argv);

#endif
