/**
 * The demo's window on the bus: exclusive queues on the lifecycle, command and notification exchanges,
 * each message printed as one line as it crosses. Shared by the test-driver story (./story.ts) and the
 * real-QEMU one (./qemu-story.ts), so both narrate the same way.
 */
import { connect, type ChannelModel } from 'amqplib';
import { formatLine } from '../cli/commands/tail';
import type { LifecycleMessage } from '../messages/lifecycle';
import type { CommandResult, StopCommand } from '../messages/command';

export interface BusNarration {
  /** Every stop command seen so far (the QEMU story checks that a migration sends none). */
  readonly commands: StopCommand[];
  readonly lifecycle: LifecycleMessage[];
  close(): Promise<void>;
}

export async function narrateBus(
  url: string,
  say: (line: string) => void,
  colour: boolean,
): Promise<BusNarration> {
  const model: ChannelModel = await connect(url);
  const commands: StopCommand[] = [];
  const lifecycle: LifecycleMessage[] = [];
  const channel = await model.createChannel();
  const tap = async (
    exchange: string,
    pattern: string,
    print: (key: string, body: unknown) => void,
  ): Promise<void> => {
    await channel.checkExchange(exchange);
    const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true });
    await channel.bindQueue(queue, exchange, pattern);
    await channel.consume(
      queue,
      (message) => {
        if (!message) return;
        try {
          print(message.fields.routingKey, JSON.parse(message.content.toString('utf8')));
        } catch {
          // not ours to judge: the demo only narrates
        }
      },
      { noAck: true },
    );
  };
  await tap('virtbus.lifecycle', '#', (_key, body) => {
    lifecycle.push(body as LifecycleMessage);
    say(`   bus ▸ ${formatLine(body as LifecycleMessage, colour)}`);
  });
  await tap('virtbus.commands', '#', (key, body) => {
    if (key.endsWith('.stop')) {
      const command = body as StopCommand;
      commands.push(command);
      say(`   cmd ▸ ${key} ${command.action} ${command.instance_uuid.slice(0, 8)}… (${command.reason})`);
    } else {
      const result = body as CommandResult;
      say(`   cmd ◂ ${key} ${result.outcome} via ${result.method}, power_state ${result.power_state}`);
    }
  });
  await tap('nova', 'versioned_notifications.info', (_key, body) => {
    try {
      const inner = JSON.parse((body as Record<string, string>)['oslo.message'] ?? '{}') as {
        event_type?: string;
        payload?: { 'nova_object.data'?: Record<string, unknown> };
      };
      const data = inner.payload?.['nova_object.data'] ?? {};
      const update =
        (data.state_update as { 'nova_object.data'?: Record<string, unknown> } | undefined)?.[
          'nova_object.data'
        ] ?? {};
      say(
        `   nova ▸ ${inner.event_type ?? '?'} ${String(data.display_name ?? data.uuid)}: vm_state ${String(update.old_state)}→${String(update.state)}, task ${String(update.old_task_state)}→${String(update.new_task_state)}, power ${String(data.power_state)}`,
      );
    } catch {
      // ignore a notification we cannot read
    }
  });
  return { commands, lifecycle, close: () => model.close().catch(() => undefined) };
}
