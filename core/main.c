/* main.c -- the `she` multi-call binary: `she <command> [options]`, like git or kcat. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "commands.h"

typedef struct she_command {
    const char *name;
    int (*run)(int argc, char **argv, char **envp);
    const char *summary;
} she_command_t;

static const she_command_t commands[] = {
    {"bench", she_cmd_bench, "measure engine training and generation throughput"},
    {"broker", she_cmd_broker, "run the embedded Kafka broker (librdkafka mock cluster)"},
    {"canary", she_cmd_canary, "move evaluated policies to serving through a gated canary"},
    {"control", she_cmd_control, "steer data selection (difficulty band, curriculum) from pass rates"},
    {"evaluate", she_cmd_evaluate, "judge a labelled log with a checkpoint: metrics and baselines"},
    {"gen-data", she_cmd_gen_data, "write a seeded synthetic query log with step ground truth"},
    {"learn", she_cmd_learn, "streaming SRPO learner: rewarded groups -> checkpoints, exactly once"},
    {"pipeline", she_cmd_pipeline, "the streaming loop on one machine (make demo), then an evaluation"},
    {"produce", she_cmd_produce, "publish search-log samples (CSV/JSONL, files or tail -f) to Kafka"},
    {"reward", she_cmd_reward, "hybrid stepwise rewards for rollout groups (Kafka consumer)"},
    {"rollout", she_cmd_rollout, "select samples and generate G responses per prompt (Kafka consumer)"},
    {"serve", she_cmd_serve, "the judge over HTTP: batching, stable and canary policies"},
    {"train-dpo", she_cmd_train_dpo, "DPO of the policy: teacher chains over its own wrong ones"},
    {"train-rl", she_cmd_train_rl, "GRPO / SRPO of the policy with stepwise hybrid rewards"},
    {"train-rm", she_cmd_train_rm, "train the generative stepwise reward model"},
    {"train-sft", she_cmd_train_sft, "supervised fine-tuning of the relevance policy"},
    {"version", she_cmd_version, "print versions of she and the libraries it uses"},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out) {
    fprintf(out, "usage: she <command> [options]\n\n"
                 "she keeps an LLM search-relevance judge learning from live search logs.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-12s %s\n", "help", "this list, or `she help <command>` for one command");
    fprintf(out, "\nEvery command takes --config FILE, --set key=value and --help; SHE_<KEY>\n"
                 "environment variables override the file (see `she <command> --help`).\n");
}

static const she_command_t *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    extern char **environ;
    if (argc < 2) {
        usage(stderr);
        return SHE_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        if (argc >= 3 && strcmp(name, "help") == 0) {
            const she_command_t *cmd = find_command(argv[2]);
            if (!cmd) {
                fprintf(stderr, "she: unknown command '%s'\n", argv[2]);
                return SHE_EXIT_USAGE;
            }
            char *help_argv[] = {argv[2], "--help", NULL};
            return cmd->run(2, help_argv, environ);
        }
        usage(stdout);
        return SHE_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    const she_command_t *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "she: unknown command '%s' (see `she help`)\n", name);
        return SHE_EXIT_USAGE;
    }
    argv[1] = (char *)cmd->name;
    return cmd->run(argc - 1, argv + 1, environ);
}
