/* quantize.h - the `dgemma quantize` and `dgemma synth` commands (cli/quantize.c). */
#ifndef DG_CLI_QUANTIZE_H
#define DG_CLI_QUANTIZE_H

int dg_cli_quantize(int argc, char **argv);
int dg_cli_synth(int argc, char **argv);

#endif
