/**
 * The broker user this bridge logs in as, for the user_id of its results: RabbitMQ refuses a publish
 * whose user_id is not the connection's user, so a result's user_id proves which host's credential
 * sent it. amqplib logs in as the URL's user, or guest/guest when the URL names none.
 */
import { splitUrls } from '../../amqp/connection';

/**
 * The user name of the first URL (cluster URLs share one credential); undefined when the URL names
 * none and a client certificate is configured (the login may be by certificate, whose name is not
 * known here: better no user_id than one the broker refuses).
 */
export function brokerUserOf(url: string, clientCertificate: boolean): string | undefined {
  const first = splitUrls(url)[0];
  if (first === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(first);
  } catch {
    return undefined;
  }
  if (parsed.username === '' && parsed.password === '') return clientCertificate ? undefined : 'guest';
  return decodeURIComponent(parsed.username);
}
