/* The subcommands of the tailcut program: one file each, one entry point each. */
#ifndef TAILCUT_APP_COMMANDS_H
#define TAILCUT_APP_COMMANDS_H

int cmd_serve(int argc, char **argv);
int cmd_upstream(int argc, char **argv);
int cmd_fetch(int argc, char **argv);

#endif /* TAILCUT_APP_COMMANDS_H */
