/* commands.h -- the entry point of every `she` subcommand (dispatched by core/main.c).
 * Each returns the process exit status (cmd.h: 0 ok, 1 failure, 2 usage/configuration). */
#ifndef SHE_COMMANDS_H
#define SHE_COMMANDS_H

int she_cmd_version(int argc, char **argv, char **envp);
int she_cmd_broker(int argc, char **argv, char **envp);
int she_cmd_bench(int argc, char **argv, char **envp);
int she_cmd_gen_data(int argc, char **argv, char **envp);
int she_cmd_train_sft(int argc, char **argv, char **envp);
int she_cmd_evaluate(int argc, char **argv, char **envp);
int she_cmd_train_rl(int argc, char **argv, char **envp);
int she_cmd_train_rm(int argc, char **argv, char **envp);
int she_cmd_train_dpo(int argc, char **argv, char **envp);
int she_cmd_produce(int argc, char **argv, char **envp);
int she_cmd_control(int argc, char **argv, char **envp);
int she_cmd_rollout(int argc, char **argv, char **envp);
int she_cmd_reward(int argc, char **argv, char **envp);
int she_cmd_learn(int argc, char **argv, char **envp);
int she_cmd_pipeline(int argc, char **argv, char **envp);
int she_cmd_serve(int argc, char **argv, char **envp);
int she_cmd_canary(int argc, char **argv, char **envp);

#endif
