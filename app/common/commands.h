/* The subcommands of the tailcut program: one folder each, one entry point and one settings table
 * each (the table also gives the man page's OPTIONS: tailcut --man-options CMD). */
#ifndef TAILCUT_APP_COMMANDS_H
#define TAILCUT_APP_COMMANDS_H

#include "settings.h"

int cmd_serve(int argc, char **argv);
int cmd_upstream(int argc, char **argv);
int cmd_fetch(int argc, char **argv);

extern const settings_table serve_settings;
extern const settings_table upstream_settings;
extern const settings_table fetch_settings;

#endif /* TAILCUT_APP_COMMANDS_H */
