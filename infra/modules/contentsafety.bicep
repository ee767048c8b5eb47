// Azure AI Content Safety: the guards of the cloud image (LABKIT_SAFETY_BACKEND=azure; the offline
// classifier is not in that image). Keys disabled; Cognitive Services User for the app and the learner.

@description('Name of the account (also its custom subdomain, which Entra ID sign-in requires)')
param name string

@description('Region (Content Safety, incl. Prompt Shields, is not offered in every region)')
param location string

@description('Tags')
param tags object = {}

@description('S0 (pay per call) or F0 (free: one per subscription, low rate limits)')
@allowed([
  'S0'
  'F0'
])
param sku string = 'S0'

@description('Principal id of the app\'s managed identity')
param appPrincipalId string

@description('Object id of the signed-in learner; empty: no learner role')
param userPrincipalId string = ''

@description('User for a person, ServicePrincipal for a CI identity')
param userPrincipalType string = 'User'

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.CognitiveServices/accounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'ContentSafety'
  sku: {
    name: sku
  }
  properties: {
    customSubDomainName: name
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource appUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, roles.cognitiveServicesUser.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, roles.cognitiveServicesUser.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
